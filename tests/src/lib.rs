//! The integration-test harness: a real hub on `127.0.0.1:0` with a fresh development PKI,
//! spoken to over gRPC with mutual TLS, exactly as departments and the admin do in production.
//!
//! Storage is SQLite in the test's temporary directory by default. When
//! `XINQIAO_TEST_DATABASE_URL` names a PostgreSQL database, [`on_each_backend!`] runs every test
//! body a second time on it, each hub in a fresh schema that is dropped afterwards.

pub mod federation;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Response, Status};
use tonic_types::StatusExt;
use xinqiao_domain::catalogue::{CatalogEntry, EntryFilter};
use xinqiao_domain::department::Department;
use xinqiao_domain::identifiers::uscc_check_char;
use xinqiao_domain::identity::Principal;
use xinqiao_domain::policy::EntryVisibility;
use xinqiao_hub::pki::{self, CertFiles};
use xinqiao_hub::tls::{ClientIdentity, connect};
use xinqiao_hub::{Config, RunningHub, ServeError, server};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_store::{EntryVersionRecord, PgStore, Store};

pub use xinqiao_proto::v1;

/// The environment variable naming the PostgreSQL database the suite may use.
pub const PG_URL_VAR: &str = "XINQIAO_TEST_DATABASE_URL";

/// 市市场监督管理局, a sample department of the development PKI.
pub const SAMR: &str = "11330100MB00010011";
/// 市公安局.
pub const POLICE: &str = "11330100MB0002002B";
/// 市人力资源和社会保障局.
pub const HRSS: &str = "11330100MB0003003M";
/// 市卫生健康委员会: a valid code that the development PKI does not register.
pub const HEALTH: &str = "11330100MB00040040";
/// The admin named in the development admin certificate.
pub const ADMIN: &str = pki::DEV_ADMIN;

pub type Directory = DirectoryServiceClient<Channel>;

/// Where a test hub keeps its data.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file in the hub's temporary directory.
    Sqlite,
    /// A fresh schema in this PostgreSQL database.
    Postgres { url: String },
}

impl Backend {
    /// PostgreSQL when [`PG_URL_VAR`] names a database; otherwise says that `test` was skipped.
    pub fn postgres(test: &str) -> Option<Backend> {
        match std::env::var(PG_URL_VAR) {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres { url }),
            _ => {
                eprintln!("skipping the PostgreSQL run of {test}: {PG_URL_VAR} is not set");
                None
            }
        }
    }
}

/// Runs each named test body, an `async fn(Backend)`, on SQLite (`sqlite::<name>`) and, when
/// [`PG_URL_VAR`] is set, on PostgreSQL (`postgres::<name>`; without the variable that test prints
/// that it was skipped and passes).
#[macro_export]
macro_rules! on_each_backend {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::Backend::Sqlite).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(backend) = $crate::Backend::postgres(stringify!($test)) {
                        super::$test(backend).await;
                    }
                }
            )+
        }
    };
}

/// A PostgreSQL schema made for one hub, dropped when the hub is (also when a test panics).
struct PgSchema {
    url: String,
    name: String,
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop may run inside the test's runtime, which must not be blocked on; a thread with a
        // runtime of its own does the work.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                // The name is one this harness made up (a UUID), never outside input.
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test schema {}", self.name);
        }
    }
}

/// Everything a hub has stored, read through the store: equal snapshots before and after a
/// refused call prove that the call changed nothing.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub departments: Vec<Department>,
    pub entries: Vec<CatalogEntry>,
    pub versions: Vec<Vec<EntryVersionRecord>>,
}

/// A hub serving on loopback, with its PKI and data in a temporary directory.
pub struct TestHub {
    pub addr: SocketAddr,
    hub: Option<RunningHub>,
    store: Arc<dyn Store>,
    pg_store: Option<PgStore>,
    dir: TempDir,
    // Declared last: dropped after the hub and its store.
    _pg_schema: Option<PgSchema>,
}

impl TestHub {
    /// A hub on SQLite with the sample departments registered.
    pub async fn start() -> TestHub {
        Self::start_on(Backend::Sqlite).await
    }

    /// A hub on `backend` with the sample departments registered.
    pub async fn start_on(backend: Backend) -> TestHub {
        Self::start_with(backend, |_| {}).await
    }

    /// Like [`TestHub::start_on`], after `configure` has adjusted the hub's configuration.
    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestHub {
        xinqiao_hub::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = Config {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            data_dir: Some(dir.path().to_path_buf()),
            ..Config::default()
        };
        // A hub that cannot stop within this is broken; the tests need not wait 30 s to see it.
        config.limits.shutdown_grace_secs = 5;
        configure(&mut config);
        pki::init(&config.pki_dir(), &[]).expect("development PKI");

        let (hub, pg_store, pg_schema) = match backend {
            Backend::Sqlite => (server::start(&config).await.expect("hub starts on SQLite"), None, None),
            Backend::Postgres { url } => {
                let name = format!("xq_it_{}", uuid::Uuid::new_v4().simple());
                // The guard exists before the schema does, so a failed start still cleans up.
                let schema = PgSchema {
                    url: url.clone(),
                    name: name.clone(),
                };
                let store = PgStore::open_in_schema(&url, &name)
                    .await
                    .unwrap_or_else(|e| panic!("{PG_URL_VAR} is set but the store does not open: {e}"));
                let hub = server::start_with_store(&config, Arc::new(store.clone()))
                    .await
                    .expect("hub starts on PostgreSQL");
                (hub, Some(store), Some(schema))
            }
        };
        server::register_sample_departments(hub.store.as_ref())
            .await
            .expect("sample departments");
        TestHub {
            addr: hub.addr,
            store: hub.store.clone(),
            hub: Some(hub),
            pg_store,
            dir,
            _pg_schema: pg_schema,
        }
    }

    /// The hub's address as a client dials it.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// The development PKI: the CA and every certificate it issued.
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// The hub's store, to look behind the API (counting rows, proving nothing changed).
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The hub's store as a shared handle, for parts of the hub a test builds beside it.
    pub fn store_handle(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Another hub node over this hub's store and PKI, as a second node behind a load balancer
    /// over one PostgreSQL is (on SQLite, a stand-in that shares the store object). Stopped when
    /// dropped with the test's runtime.
    pub async fn second_node(&self) -> RunningHub {
        let config = Config {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            data_dir: Some(self.dir.path().to_path_buf()),
            ..Config::default()
        };
        server::start_with_store(&config, self.store.clone())
            .await
            .expect("a second hub node starts")
    }

    /// A mutual-TLS channel presenting the certificate in `files`.
    pub async fn channel(&self, files: CertFiles) -> Channel {
        let identity = ClientIdentity {
            ca: pki::ca_cert_path(&self.pki_dir()),
            cert: files.cert,
            key: files.key,
        };
        connect(&self.url(), &identity).await.expect("connect to the test hub")
    }

    pub async fn admin_channel(&self) -> Channel {
        self.channel(pki::admin_files(&self.pki_dir())).await
    }

    /// The platform admin's client.
    pub async fn admin(&self) -> Directory {
        DirectoryServiceClient::new(self.admin_channel().await)
    }

    /// The client of a department whose certificate the PKI has issued.
    pub async fn dept(&self, code: &str) -> Directory {
        DirectoryServiceClient::new(self.channel(pki::department_files(&self.pki_dir(), code)).await)
    }

    /// The client of a department with a valid certificate from the platform CA, issued now,
    /// whether or not the department is registered.
    pub async fn issue_dept(&self, code: &str) -> Directory {
        pki::issue(&self.pki_dir(), &Principal::Department(code.into())).expect("issue a department certificate");
        self.dept(code).await
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(self.url())
            .expect("hub URL")
            .connect_timeout(Duration::from_secs(5))
    }

    fn trust_the_hub(&self) -> ClientTlsConfig {
        let ca = std::fs::read(pki::ca_cert_path(&self.pki_dir())).expect("read the CA certificate");
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca))
    }

    /// A channel that trusts the hub but presents no client certificate. It connects lazily:
    /// the refusal shows as the first call's error.
    pub fn channel_without_certificate(&self) -> Channel {
        self.endpoint()
            .tls_config(self.trust_the_hub())
            .expect("TLS config")
            .connect_lazy()
    }

    /// A channel that trusts the hub but presents an admin certificate from another CA, made
    /// with a second development PKI. It connects lazily.
    pub fn channel_from_foreign_ca(&self) -> Channel {
        let other = self.dir.path().join("foreign-pki");
        if !pki::ca_cert_path(&other).exists() {
            pki::init(&other, &[]).expect("a second development PKI");
        }
        let files = pki::admin_files(&other);
        let identity = Identity::from_pem(read(&files.cert), read(&files.key));
        let tls = self.trust_the_hub().identity(identity);
        self.endpoint().tls_config(tls).expect("TLS config").connect_lazy()
    }

    /// Everything stored, in a stable order.
    pub async fn snapshot(&self) -> Snapshot {
        let store = self.store();
        let departments = store
            .list_departments(None, 100_000, true)
            .await
            .expect("list departments");
        let entries = store
            .search_entries(&EntryVisibility::All, &EntryFilter::default(), None, 100_000)
            .await
            .expect("list entries");
        let mut versions = Vec::new();
        for entry in &entries {
            versions.push(
                store
                    .list_entry_versions(&entry.resource_code)
                    .await
                    .expect("list versions"),
            );
        }
        Snapshot {
            departments,
            entries,
            versions,
        }
    }

    /// Stops the hub gracefully. The PKI and the data stay until the `TestHub` is dropped.
    pub async fn stop(&mut self) -> Result<(), ServeError> {
        let result = match self.hub.take() {
            Some(hub) => hub.stop().await,
            None => Ok(()),
        };
        if let Some(store) = self.pg_store.take() {
            store.close().await;
        }
        result
    }

    /// Stops the hub at the end of a test, which must succeed.
    pub async fn finish(mut self) {
        self.stop().await.expect("the hub stops gracefully");
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Building requests

/// A valid 统一社会信用代码 in division 330100 for `serial` (at most 7 digits).
pub fn uscc(serial: u32) -> String {
    let first17 = format!("11330100MB{serial:07}");
    let check = uscc_check_char(&first17).expect("the prefix is in the code alphabet");
    format!("{first17}{check}")
}

pub fn register_request(code: &str, name: &str) -> pb::RegisterDepartmentRequest {
    pb::RegisterDepartmentRequest {
        code: code.into(),
        name: name.into(),
        division_code: "330100".into(),
        contact: "办公室 0571-00000000".into(),
    }
}

pub fn item(name: &str, data_type: &str, length: u32) -> pb::DataItem {
    pb::DataItem {
        name: name.into(),
        data_type: data_type.into(),
        length,
        sensitive: false,
        description: String::new(),
    }
}

/// Valid entry content: a database, shared unconditionally, not opened, updated daily.
pub fn content(name: &str, classification: &str, summary: &str) -> pb::EntryContent {
    pb::EntryContent {
        name: name.into(),
        classification: classification.into(),
        summary: summary.into(),
        format: pb::ResourceFormat::Database as i32,
        items: vec![item("统一社会信用代码", "字符型", 18), item("名称", "字符型", 200)],
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

/// Makes `content` conditionally shared (有条件共享) with its condition and legal basis.
pub fn conditional(mut content: pb::EntryContent) -> pb::EntryContent {
    content.share = Some(pb::ShareAttributes {
        share_type: pb::ShareType::Conditional as i32,
        condition: "仅用于行政审批".into(),
        channel: pb::ShareChannel::Platform as i32,
        exchange_kind: pb::ExchangeKind::Interface as i32,
        legal_basis: "《政务信息资源共享管理暂行办法》".into(),
    });
    content
}

pub fn create(content: pb::EntryContent) -> pb::CreateEntryRequest {
    pb::CreateEntryRequest { content: Some(content) }
}

pub fn update(code: &str, content: pb::EntryContent) -> pb::UpdateEntryRequest {
    pb::UpdateEntryRequest {
        resource_code: code.into(),
        content: Some(content),
        expected_version: 0,
    }
}

pub fn submit(code: &str) -> pb::SubmitEntryRequest {
    pb::SubmitEntryRequest {
        resource_code: code.into(),
        expected_version: 0,
    }
}

pub fn publish(code: &str) -> pb::PublishEntryRequest {
    pb::PublishEntryRequest {
        resource_code: code.into(),
        expected_version: 0,
    }
}

pub fn return_with(code: &str, reason: &str) -> pb::ReturnEntryRequest {
    pb::ReturnEntryRequest {
        resource_code: code.into(),
        reason: reason.into(),
        expected_version: 0,
    }
}

pub fn withdraw(code: &str, reason: &str) -> pb::WithdrawEntryRequest {
    pb::WithdrawEntryRequest {
        resource_code: code.into(),
        reason: reason.into(),
        expected_version: 0,
    }
}

pub fn get(code: &str, version: u64) -> pb::GetEntryRequest {
    pb::GetEntryRequest {
        resource_code: code.into(),
        version,
    }
}

pub fn versions(code: &str) -> pb::ListEntryVersionsRequest {
    pb::ListEntryVersionsRequest {
        resource_code: code.into(),
    }
}

pub fn keyword(text: &str) -> pb::SearchEntriesRequest {
    pb::SearchEntriesRequest {
        keyword: text.into(),
        ..Default::default()
    }
}

/// Every entry a search finds, following page tokens until they run out.
pub async fn search_all(client: &mut Directory, mut request: pb::SearchEntriesRequest) -> Vec<pb::CatalogEntry> {
    let mut found = Vec::new();
    loop {
        let page = ok(client.search_entries(request.clone()).await);
        found.extend(page.entries);
        if page.next_page_token.is_empty() {
            return found;
        }
        request.page_token = page.next_page_token;
    }
}

/// The resource codes a search finds (every page).
pub async fn search_codes(client: &mut Directory, request: pb::SearchEntriesRequest) -> Vec<String> {
    search_all(client, request)
        .await
        .into_iter()
        .map(|e| e.resource_code)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Checking answers

/// The answer of a call that must succeed.
#[track_caller]
pub fn ok<T>(result: Result<Response<T>, Status>) -> T {
    match result {
        Ok(response) => response.into_inner(),
        Err(status) => panic!("expected success, got {:?}: {}", status.code(), status.message()),
    }
}

/// The status of a call that must be refused with `code`.
#[track_caller]
pub fn refused<T: Debug>(result: Result<Response<T>, Status>, code: Code) -> Status {
    match result {
        Ok(response) => panic!("expected {code:?}, but the call succeeded: {:?}", response.get_ref()),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "expected {code:?}, got {:?}: {}",
                status.code(),
                status.message()
            );
            status
        }
    }
}

/// The fields named by the status's google.rpc.BadRequest details.
#[track_caller]
pub fn violated_fields(status: &Status) -> Vec<String> {
    let bad = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest details in {:?}: {}", status.code(), status.message()));
    bad.field_violations.into_iter().map(|v| v.field).collect()
}

/// Refused with INVALID_ARGUMENT, naming (at least) each of `fields` in its BadRequest details.
#[track_caller]
pub fn invalid<T: Debug>(result: Result<Response<T>, Status>, fields: &[&str]) -> Status {
    let status = refused(result, Code::InvalidArgument);
    let named = violated_fields(&status);
    for field in fields {
        assert!(
            named.iter().any(|n| n == field),
            "expected a violation on {field}, got {named:?} ({})",
            status.message()
        );
    }
    status
}

// ---------------------------------------------------------------------------------------------
// The schema registry

pub type Schemas = xinqiao_proto::v1::schema_service_client::SchemaServiceClient<Channel>;

/// A JSON document (serde_json's `Value`, as sqlx re-exports it), for reading and editing schemas
/// and records in tests.
pub use sqlx::types::JsonValue as Json;

impl TestHub {
    /// The platform admin's SchemaService client.
    pub async fn schemas_admin(&self) -> Schemas {
        Schemas::new(self.admin_channel().await)
    }

    /// The SchemaService client of a department whose certificate the PKI has issued.
    pub async fn schemas(&self, code: &str) -> Schemas {
        Schemas::new(self.channel(pki::department_files(&self.pki_dir(), code)).await)
    }
}

/// Parses JSON text that a test wrote or a call returned.
#[track_caller]
pub fn json(text: &str) -> Json {
    text.parse().unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

// ---------------------------------------------------------------------------------------------
// The exchange

pub type Exchange = xinqiao_proto::v1::exchange_service_client::ExchangeServiceClient<Channel>;

/// The shared schema that table datasets in the exchange tests follow, and its key property.
pub const LEGAL_ENTITY: &str = "legal-entity";

impl TestHub {
    /// The ExchangeService client of a department whose certificate the PKI has issued.
    pub async fn exchange(&self, code: &str) -> Exchange {
        Exchange::new(self.channel(pki::department_files(&self.pki_dir(), code)).await)
    }

    /// The platform admin's ExchangeService client.
    pub async fn exchange_admin(&self) -> Exchange {
        Exchange::new(self.admin_channel().await)
    }

    /// Registers the shared schemas (identifiers, legal-entity, person, e-licence) as the admin.
    /// Registering them again changes nothing.
    pub async fn import_shared_schemas(&self) {
        let mut admin = self.schemas_admin().await;
        for (subject, text) in xinqiao_hub::registry::SHARED_SCHEMAS {
            ok(admin
                .register_schema(pb::RegisterSchemaRequest {
                    subject: (*subject).into(),
                    schema_json: (*text).into(),
                })
                .await);
        }
    }

    /// An entry of `provider`, created, submitted and published by the admin; its resource code.
    pub async fn published_entry(&self, provider: &str, content: pb::EntryContent) -> String {
        let mut dept = self.dept(provider).await;
        let code = ok(dept.create_entry(create(content)).await).resource_code;
        ok(dept.submit_entry(submit(&code)).await);
        ok(self.admin().await.publish_entry(publish(&code)).await);
        code
    }

    /// A published entry of `provider` with a table dataset on legal-entity keyed by `uscc`. The
    /// shared schemas must be registered first ([`TestHub::import_shared_schemas`]).
    pub async fn open_table(&self, provider: &str, content: pb::EntryContent) -> pb::Dataset {
        let code = self.published_entry(provider, content).await;
        ok(self
            .exchange(provider)
            .await
            .create_dataset(table_dataset(&code, &["uscc"]))
            .await)
    }

    /// A published entry of `provider` (made a 文件 entry) with its file dataset.
    pub async fn open_files(&self, provider: &str, content: pb::EntryContent) -> pb::Dataset {
        let code = self.published_entry(provider, files_entry(content)).await;
        ok(self.exchange(provider).await.create_dataset(file_dataset(&code)).await)
    }
}

/// Opens a table dataset on the latest legal-entity version with these key properties.
pub fn table_dataset(code: &str, key: &[&str]) -> pb::CreateDatasetRequest {
    pb::CreateDatasetRequest {
        dataset: code.into(),
        schema_subject: LEGAL_ENTITY.into(),
        schema_version: 0,
        key: key.iter().map(|k| k.to_string()).collect(),
    }
}

pub fn file_dataset(code: &str) -> pb::CreateDatasetRequest {
    pb::CreateDatasetRequest {
        dataset: code.into(),
        ..Default::default()
    }
}

/// `content` with the given share type (a condition and legal basis where one is needed) and
/// 共享方式类型, keeping the rest.
pub fn shared_as(mut content: pb::EntryContent, share: pb::ShareType, kind: pb::ExchangeKind) -> pb::EntryContent {
    let restricted = share != pb::ShareType::Unconditional;
    content.share = Some(pb::ShareAttributes {
        share_type: share as i32,
        condition: if restricted {
            "仅用于行政审批".into()
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
    content
}

/// `content` made a file (文件) entry, shared unconditionally.
pub fn files_entry(mut content: pb::EntryContent) -> pb::EntryContent {
    content.format = pb::ResourceFormat::ElectronicFile as i32;
    shared_as(content, pb::ShareType::Unconditional, pb::ExchangeKind::File)
}

/// A valid 统一社会信用代码 of a company (`serial` below 10,000,000).
pub fn company_uscc(serial: u64) -> String {
    let first17 = format!("91330100MA{serial:07}");
    let check = uscc_check_char(&first17).expect("the prefix is in the code alphabet");
    format!("{first17}{check}")
}

/// A valid legal-entity record, keyed by `company_uscc(serial)`, named `name`.
pub fn company_named(serial: u64, name: &str) -> Json {
    serde_json::json!({
        "uscc": company_uscc(serial),
        "name": name,
        "legal_representative": "王五",
        "established_on": "2018-05-20",
        "status": "存续",
        "registered_capital": serial % 1000,
    })
}

/// A valid legal-entity record named `公司<serial>`.
pub fn company(serial: u64) -> Json {
    company_named(serial, &format!("公司{serial}"))
}

/// A record whose 统一社会信用代码 has a wrong check character (refused unless lenient).
pub fn wrong_check_character(serial: u64) -> Json {
    let mut record = company(serial);
    let good = company_uscc(serial);
    let wrong = if good.ends_with('0') { '1' } else { '0' };
    record["uscc"] = Json::String(format!("{}{wrong}", &good[..17]));
    record
}

pub fn upsert(record: &Json) -> pb::RecordChange {
    upsert_bytes(record.to_string().into_bytes())
}

pub fn upsert_bytes(bytes: Vec<u8>) -> pb::RecordChange {
    pb::RecordChange {
        change: Some(pb::record_change::Change::Upsert(bytes)),
    }
}

/// Deletes the company keyed by `company_uscc(serial)`.
pub fn delete_company(serial: u64) -> pb::RecordChange {
    pb::RecordChange {
        change: Some(pb::record_change::Change::Delete(
            serde_json::json!({ "uscc": company_uscc(serial) })
                .to_string()
                .into_bytes(),
        )),
    }
}

/// A batch with the default policy (REJECT_ALL), not lenient.
pub fn batch(dataset: &str, idempotency_key: &str, changes: Vec<pb::RecordChange>) -> pb::PublishRequest {
    pb::PublishRequest {
        dataset: dataset.into(),
        idempotency_key: idempotency_key.into(),
        changes,
        policy: pb::BatchPolicy::RejectAll as i32,
        lenient: false,
    }
}

/// A batch of upserts of `company(serial)` for each serial.
pub fn companies(dataset: &str, idempotency_key: &str, serials: impl IntoIterator<Item = u64>) -> pb::PublishRequest {
    batch(
        dataset,
        idempotency_key,
        serials.into_iter().map(|s| upsert(&company(s))).collect(),
    )
}

/// A Fetch that declares [`PURPOSE`] (what a department reading another's unconditionally shared
/// dataset must do; the provider and grantees may, and it changes nothing for them) and names no
/// grant.
pub fn fetch(dataset: &str, after_sequence: u64, limit: u32) -> pb::FetchRequest {
    fetch_as(dataset, after_sequence, limit, PURPOSE, "")
}

/// A Fetch with the given purpose and grant id (either may be empty).
pub fn fetch_as(dataset: &str, after_sequence: u64, limit: u32, purpose: &str, grant_id: &str) -> pb::FetchRequest {
    pb::FetchRequest {
        dataset: dataset.into(),
        after_sequence,
        limit,
        purpose: purpose.into(),
        grant_id: grant_id.into(),
    }
}

/// Every change after `after`, following pages of 10,000 until the log ends.
pub async fn fetch_all(client: &mut Exchange, dataset: &str, mut after: u64) -> Vec<pb::Change> {
    let mut all = Vec::new();
    loop {
        let page = ok(client.fetch(fetch(dataset, after, 10_000)).await);
        match page.changes.last() {
            Some(last) => after = last.sequence,
            None => return all,
        }
        all.extend(page.changes);
    }
}

pub fn get_dataset(dataset: &str) -> pb::GetDatasetRequest {
    pb::GetDatasetRequest {
        dataset: dataset.into(),
    }
}

/// The sequence numbers of `changes`, in the order given.
pub fn sequences(changes: &[pb::Change]) -> Vec<u64> {
    changes.iter().map(|c| c.sequence).collect()
}

/// The record of an upsert, parsed.
#[track_caller]
pub fn record_of(change: &pb::Change) -> Json {
    serde_json::from_slice(&change.record)
        .unwrap_or_else(|e| panic!("change {} carries no JSON record: {e}", change.sequence))
}

/// The key of a change, parsed (a JSON array of the key properties' values).
#[track_caller]
pub fn key_of(change: &pb::Change) -> Json {
    serde_json::from_slice(&change.key).unwrap_or_else(|e| panic!("change {} has no JSON key: {e}", change.sequence))
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    xinqiao_domain::fingerprint::to_hex(&sha2::Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------------
// Access under the sharing rules, and the audit trail

pub type Access = xinqiao_proto::v1::access_service_client::AccessServiceClient<Channel>;
pub type Audit = xinqiao_proto::v1::audit_service_client::AuditServiceClient<Channel>;

/// Dates and times, as the hub's configuration and deadlines use them.
pub use chrono;
/// The API's timestamps.
pub use xinqiao_hub::convert::{Timestamp, timestamp};

/// The purpose (用途) the harness declares when it reads: a department reading another's
/// unconditionally shared dataset must state one.
pub const PURPOSE: &str = "企业登记信息核验";

/// A shared-schema-style subject of residents with contact details: the fields a grant projects
/// and masks (公民身份号码, 姓名, 手机号码, an address and an income). Keyed by `resident_id`.
pub const RESIDENTS: &str = "resident-contact";

pub const RESIDENTS_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "低保对象联系信息",
  "type": "object",
  "properties": {
    "resident_id": { "$ref": "xinqiao://schemas/identifiers/1#/$defs/resident_id", "title": "公民身份号码" },
    "name": { "title": "姓名", "type": "string", "minLength": 1, "maxLength": 50 },
    "mobile": { "$ref": "xinqiao://schemas/identifiers/1#/$defs/mobile", "title": "手机号码" },
    "address": { "title": "住址", "type": "string", "maxLength": 500 },
    "monthly_income": { "title": "月收入", "type": "number", "minimum": 0 }
  },
  "required": ["resident_id", "name"]
}"#;

/// Every top-level field of [`RESIDENTS`] records.
pub const RESIDENT_FIELDS: [&str; 5] = ["resident_id", "name", "mobile", "address", "monthly_income"];

impl TestHub {
    /// The AccessService client of a department whose certificate the PKI has issued.
    pub async fn access(&self, code: &str) -> Access {
        Access::new(self.channel(pki::department_files(&self.pki_dir(), code)).await)
    }

    /// The platform admin's AccessService client.
    pub async fn access_admin(&self) -> Access {
        Access::new(self.admin_channel().await)
    }

    /// The AuditService client of a department whose certificate the PKI has issued.
    pub async fn audit(&self, code: &str) -> Audit {
        Audit::new(self.channel(pki::department_files(&self.pki_dir(), code)).await)
    }

    /// The platform admin's AuditService client.
    pub async fn audit_admin(&self) -> Audit {
        Audit::new(self.admin_channel().await)
    }

    /// Registers the shared schemas and [`RESIDENTS`]. Doing it again changes nothing.
    pub async fn import_resident_schema(&self) {
        self.import_shared_schemas().await;
        ok(self
            .schemas_admin()
            .await
            .register_schema(pb::RegisterSchemaRequest {
                subject: RESIDENTS.into(),
                schema_json: RESIDENTS_SCHEMA.into(),
            })
            .await);
    }

    /// A published entry of `provider`, shared as `share`, with a table dataset on [`RESIDENTS`]
    /// keyed by `resident_id`. [`TestHub::import_resident_schema`] must have run.
    pub async fn open_residents(&self, provider: &str, name: &str, share: pb::ShareType) -> pb::Dataset {
        let entry = shared_as(residents_entry(name), share, pb::ExchangeKind::Table);
        let code = self.published_entry(provider, entry).await;
        ok(self
            .exchange(provider)
            .await
            .create_dataset(pb::CreateDatasetRequest {
                dataset: code,
                schema_subject: RESIDENTS.into(),
                schema_version: 0,
                key: vec!["resident_id".into()],
            })
            .await)
    }

    /// A published 文件 entry of `provider`, shared as `share`, with its file dataset.
    pub async fn open_files_shared(&self, provider: &str, name: &str, share: pb::ShareType) -> pb::Dataset {
        let entry = shared_as(files_entry(residents_entry(name)), share, pb::ExchangeKind::File);
        let code = self.published_entry(provider, entry).await;
        ok(self.exchange(provider).await.create_dataset(file_dataset(&code)).await)
    }

    /// Uploads `bytes` as `file_name` to a file dataset of `provider`, in one call.
    pub async fn upload_file(&self, provider: &str, dataset: &str, file_name: &str, bytes: &[u8]) -> pb::UploadStatus {
        let mut client = self.exchange(provider).await;
        let started = ok(client
            .start_upload(pb::StartUploadRequest {
                dataset: dataset.into(),
                file_name: file_name.into(),
                size: bytes.len() as u64,
                sha256: sha256_hex(bytes),
            })
            .await);
        let chunk = pb::FileChunk {
            upload_id: started.upload_id.clone(),
            offset: 0,
            data: bytes.to_vec(),
        };
        let done = ok(client.upload_chunks(tokio_stream::iter(vec![chunk])).await);
        assert!(done.complete, "the upload of {file_name} completes");
        done
    }

    /// `applicant` applies for `fields` of `dataset` (see [`application`]); the request.
    pub async fn apply(&self, applicant: &str, dataset: &str, fields: &[&str]) -> pb::AccessRequest {
        ok(self
            .access(applicant)
            .await
            .request_access(request_access(application(dataset, fields)))
            .await)
    }

    /// `applicant` applies and `provider` approves as `approval` says (its request id is filled
    /// in); the approved request and its grant.
    pub async fn grant(
        &self,
        provider: &str,
        applicant: &str,
        dataset: &str,
        fields: &[&str],
        approval: pb::ApproveRequestRequest,
    ) -> (pb::AccessRequest, pb::AccessGrant) {
        let request = self.apply(applicant, dataset, fields).await;
        let mut provider_client = self.access(provider).await;
        let approved = ok(provider_client
            .approve_request(pb::ApproveRequestRequest {
                request_id: request.request_id.clone(),
                ..approval
            })
            .await);
        assert_eq!(approved.state, pb::RequestState::Approved as i32);
        assert!(!approved.grant_id.is_empty(), "an approval names its grant");
        let grant = ok(provider_client.get_grant(get_grant(&approved.grant_id)).await);
        (approved, grant)
    }

    /// Runs one SQL statement on the hub's database behind its back (to tamper with it, or to
    /// move a date into the past); the number of rows it changed. Only for statements the test
    /// wrote itself.
    pub async fn execute_sql(&self, sql: &str) -> u64 {
        use sqlx::Connection;
        match &self._pg_schema {
            Some(pg) => {
                let mut conn = sqlx::PgConnection::connect(&pg.url)
                    .await
                    .expect("connect to PostgreSQL");
                // The schema name is one this harness made up (a UUID).
                sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO \"{}\"", pg.name)))
                    .execute(&mut conn)
                    .await
                    .expect("set the search path");
                let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut conn)
                    .await
                    .expect("the statement runs");
                conn.close().await.expect("close");
                done.rows_affected()
            }
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(self.dir.path().join("hub.db"))
                    .busy_timeout(Duration::from_secs(10));
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("open the hub's SQLite file");
                let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut conn)
                    .await
                    .expect("the statement runs");
                conn.close().await.expect("close");
                done.rows_affected()
            }
        }
    }
}

/// Entry content for residents' data (人口), its data items covered by [`RESIDENTS`] by title.
pub fn residents_entry(name: &str) -> pb::EntryContent {
    let mut c = content(name, "101001", "低保对象及其联系方式");
    c.items = vec![
        item("公民身份号码", "字符型", 18),
        item("姓名", "字符型", 50),
        item("手机号码", "字符型", 11),
    ];
    c
}

/// A valid 公民身份号码 born 1990-03-07 in 330106, numbered `serial` (1 to 999).
pub fn resident_id(serial: u32) -> String {
    let first17 = format!("33010619900307{serial:03}");
    let check = xinqiao_domain::identifiers::resident_id_check_char(&first17).expect("17 digits");
    format!("{first17}{check}")
}

/// A valid mobile number ending in `serial`.
pub fn mobile(serial: u32) -> String {
    format!("1381234{serial:04}")
}

/// The exact text of a [`RESIDENTS`] record, in the order a publisher wrote it.
pub fn resident_text(serial: u32, name: &str) -> String {
    format!(
        r#"{{"resident_id":"{}","name":"{name}","mobile":"{}","address":"浙江省杭州市西湖区文三路{serial}号","monthly_income":{}}}"#,
        resident_id(serial),
        mobile(serial),
        1000 + serial
    )
}

/// An upsert of [`resident_text`].
pub fn upsert_resident(serial: u32, name: &str) -> pb::RecordChange {
    upsert_bytes(resident_text(serial, name).into_bytes())
}

/// Deletes the resident `resident_id(serial)`.
pub fn delete_resident(serial: u32) -> pb::RecordChange {
    pb::RecordChange {
        change: Some(pb::record_change::Change::Delete(
            serde_json::json!({ "resident_id": resident_id(serial) })
                .to_string()
                .into_bytes(),
        )),
    }
}

/// Today in China Standard Time, the day requests and deadlines are counted in.
pub fn china_today() -> chrono::NaiveDate {
    xinqiao_domain::access::china_day(chrono::Utc::now())
}

/// An application for `fields` (empty for a file dataset) over the coming year.
pub fn application(dataset: &str, fields: &[&str]) -> pb::AccessApplication {
    let today = china_today();
    pb::AccessApplication {
        dataset: dataset.into(),
        purpose: "最低生活保障资格核验".into(),
        scope: "市民政局社会救助处".into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        period_from: today.to_string(),
        period_until: (today + chrono::Duration::days(365)).to_string(),
        business_system: "社会救助信息系统".into(),
        operations: vec![],
    }
}

pub fn request_access(application: pb::AccessApplication) -> pb::RequestAccessRequest {
    pb::RequestAccessRequest {
        application: Some(application),
    }
}

/// An approval granting the fields as requested, unmasked, until the end of the period; the
/// request id is filled in by [`TestHub::grant`] or by the test.
pub fn approval(fields: &[&str], masks: &[(&str, &str)]) -> pb::ApproveRequestRequest {
    pb::ApproveRequestRequest {
        request_id: String::new(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        masks: masks.iter().map(|(f, r)| mask(f, r)).collect(),
        expires_at: None,
        note: String::new(),
        operations: vec![],
    }
}

pub fn mask(field: &str, rule: &str) -> pb::FieldMask {
    pb::FieldMask {
        field: field.into(),
        rule: rule.into(),
    }
}

pub fn get_request(id: &str) -> pb::GetRequestRequest {
    pb::GetRequestRequest { request_id: id.into() }
}

pub fn get_grant(id: &str) -> pb::GetGrantRequest {
    pb::GetGrantRequest { grant_id: id.into() }
}

pub fn revoke_grant(id: &str, reason: &str) -> pb::RevokeGrantRequest {
    pb::RevokeGrantRequest {
        grant_id: id.into(),
        reason: reason.into(),
    }
}

pub fn snapshot_as(dataset: &str, purpose: &str, grant_id: &str) -> pb::SnapshotRequest {
    pb::SnapshotRequest {
        dataset: dataset.into(),
        as_of_sequence: 0,
        purpose: purpose.into(),
        grant_id: grant_id.into(),
    }
}

pub fn subscribe_as(dataset: &str, after_sequence: u64, purpose: &str, grant_id: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        dataset: dataset.into(),
        after_sequence,
        consumer: String::new(),
        max_batch: 0,
        purpose: purpose.into(),
        grant_id: grant_id.into(),
    }
}

pub fn download_as(dataset: &str, file_name: &str, purpose: &str, grant_id: &str) -> pb::DownloadFileRequest {
    pb::DownloadFileRequest {
        dataset: dataset.into(),
        file_name: file_name.into(),
        purpose: purpose.into(),
        grant_id: grant_id.into(),
        offset: 0,
    }
}

/// How long a test waits for something that should come promptly before calling the hub broken.
pub const STREAM_GUARD: Duration = Duration::from_secs(60);

/// The first message of a server stream, or the refusal: an error at the call or as the first
/// thing the stream yields (either way, before any message). `Ok(None)` is a stream that ended
/// without a message.
pub async fn first_message<T>(call: Result<Response<tonic::Streaming<T>>, Status>) -> Result<Option<T>, Status> {
    let mut stream = call?.into_inner();
    match tokio::time::timeout(STREAM_GUARD, stream.message()).await {
        Ok(result) => result,
        Err(_) => panic!("nothing came on the stream within {STREAM_GUARD:?}"),
    }
}

/// Every message of a server stream until it ends, or the error it ends with (with what came
/// before it).
pub async fn drain<T>(stream: &mut tonic::Streaming<T>) -> (Vec<T>, Option<Status>) {
    let mut messages = Vec::new();
    loop {
        match tokio::time::timeout(STREAM_GUARD, stream.message()).await {
            Ok(Ok(Some(m))) => messages.push(m),
            Ok(Ok(None)) => return (messages, None),
            Ok(Err(status)) => return (messages, Some(status)),
            Err(_) => panic!("the stream stalled for {STREAM_GUARD:?}"),
        }
    }
}

/// Every change of a Fetch-able dataset after `after` as `client` reads it with this purpose and
/// grant, following pages until the log ends.
pub async fn fetch_all_as(client: &mut Exchange, dataset: &str, purpose: &str, grant_id: &str) -> Vec<pb::Change> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = ok(client.fetch(fetch_as(dataset, after, 10_000, purpose, grant_id)).await);
        match page.changes.last() {
            Some(last) => after = last.sequence,
            None => return all,
        }
        all.extend(page.changes);
    }
}

/// Every audit event `client` may see that matches `request` (all pages).
pub async fn audit_events(client: &mut Audit, mut request: pb::ListEventsRequest) -> Vec<pb::AuditEvent> {
    let mut events = Vec::new();
    loop {
        let page = ok(client.list_events(request.clone()).await);
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        request.page_token = page.next_page_token;
    }
}

/// The actor the trail names for the development admin.
pub fn admin_actor() -> String {
    format!("admin:{ADMIN}")
}
