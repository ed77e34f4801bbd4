//! Three levels of hubs on loopback for the federation tests: county (330110) → city (330100) →
//! province (330000), each with its own PKI, CA and database, restartable on its port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use xinqiao_domain::identity::Principal;
use xinqiao_hub::metrics::Metrics;
use xinqiao_hub::pki::{self, CertFiles};
use xinqiao_hub::tls::{ClientIdentity, connect};
use xinqiao_hub::{Config, RunningHub, server};
use xinqiao_proto::v1;
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_proto::v1::federation_service_client::FederationServiceClient;
use xinqiao_store::{AuditFilter, PgStore, Store};

use std::time::Instant;

use crate::*;

pub const COUNTY: &str = "330110";
pub const CITY: &str = "330100";
pub const PROVINCE: &str = "330000";

pub type Federation = FederationServiceClient<Channel>;

/// One level's hub: its own PKI and database in a directory of its own, restartable on its port.
pub struct Level {
    pub division: &'static str,
    dir: TempDir,
    backend: Backend,
    pg_schema: Option<String>,
    pub addr: SocketAddr,
    hub: Option<RunningHub>,
    /// The hub's store, kept after it stops (the data stays).
    pub store: Option<Arc<dyn Store>>,
    /// The hub's metrics, while it runs.
    pub metrics: Option<Metrics>,
    /// Whether the hub runs on a runtime of its own, which [`Level::kill`] ends like a killed
    /// process: every task and connection of the hub dropped at once, nothing of a stop run.
    alone: bool,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Level {
    pub async fn start(division: &'static str, backend: &Backend) -> Level {
        Level::started(division, backend, false).await
    }

    /// A hub on a runtime of its own, so that it can be killed (see [`Level::kill`]).
    pub async fn start_alone(division: &'static str, backend: &Backend) -> Level {
        Level::started(division, backend, true).await
    }

    async fn started(division: &'static str, backend: &Backend, alone: bool) -> Level {
        xinqiao_hub::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temporary directory");
        let pki_dir = dir.path().join("pki");
        pki::init(&pki_dir, &[]).expect("a development PKI of its own");
        pki::issue(&pki_dir, &Principal::Hub(division.into())).expect("the hub's identity certificate");
        let pg_schema = match backend {
            Backend::Sqlite => None,
            Backend::Postgres { .. } => Some(format!("xq_fed_{}", uuid::Uuid::new_v4().simple())),
        };
        let mut level = Level {
            division,
            dir,
            backend: backend.clone(),
            pg_schema,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            hub: None,
            store: None,
            metrics: None,
            alone,
            runtime: None,
        };
        level.run().await;
        server::register_sample_departments(level.store())
            .await
            .expect("sample departments");
        level
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_deref().expect("the hub has started")
    }

    pub fn config(&self) -> Config {
        let mut config = Config {
            listen: Some(self.addr),
            data_dir: Some(self.dir.path().to_path_buf()),
            ..Config::default()
        };
        config.limits.shutdown_grace_secs = 2;
        config.federation.division = Some(self.division.into());
        config.federation.wait_secs = Some(2);
        config.federation.retry_secs = Some(1);
        config
    }

    /// Starts (or starts again) the hub on its data and, after the first start, its port.
    pub async fn run(&mut self) {
        let started = Instant::now();
        let hub = loop {
            let start = start_hub(self.config(), self.backend.clone(), self.pg_schema.clone());
            let result = if self.alone {
                let runtime = self.runtime.get_or_insert_with(|| {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .expect("a runtime for the hub")
                });
                runtime.spawn(start).await.expect("the hub's start does not panic")
            } else {
                start.await
            };
            match result {
                Ok(hub) => break hub,
                // A killed hub's port is free once its runtime's threads have dropped the
                // listener, a moment after the kill.
                Err(server::ServeError::Listen { .. }) if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("the hub does not start: {e}"),
            }
        };
        self.addr = hub.addr;
        self.store = Some(hub.store.clone());
        self.metrics = Some(hub.metrics.clone());
        self.hub = Some(hub);
    }

    pub async fn stop(&mut self) {
        if let Some(hub) = self.hub.take() {
            hub.stop().await.expect("the hub stops gracefully");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Kills a hub started with [`Level::start_alone`] as SIGKILL would: its runtime is shut down
    /// without the hub's stop, so its connections close under its peers mid-call, its open
    /// streams end with no status and whatever it had in hand is dropped. Its data stays.
    pub fn kill(&mut self) {
        let runtime = self
            .runtime
            .take()
            .expect("a hub started alone, on a runtime of its own");
        runtime.shutdown_background();
        // Nothing of it runs any more; what is left is memory.
        drop(self.hub.take());
        self.store = None;
        self.metrics = None;
    }

    /// Records this hub delivered from `dataset` (its `xinqiao_records_delivered_total`).
    pub fn delivered(&self, dataset: &str) -> u64 {
        let text = self.metrics.as_ref().expect("the hub runs").render();
        let series = format!("xinqiao_records_delivered_total{{dataset=\"{dataset}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .map_or(0, |n| n.trim().parse().expect("a count"))
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(pki::ca_cert_path(&self.pki_dir())).expect("the CA certificate")
    }

    pub async fn channel(&self, files: CertFiles) -> Channel {
        let identity = ClientIdentity {
            ca: pki::ca_cert_path(&self.pki_dir()),
            cert: files.cert,
            key: files.key,
        };
        connect(&self.url(), &identity).await.expect("connect to the hub")
    }

    pub async fn admin(&self) -> Directory {
        DirectoryServiceClient::new(self.channel(pki::admin_files(&self.pki_dir())).await)
    }

    pub async fn dept(&self, code: &str) -> Directory {
        DirectoryServiceClient::new(self.channel(pki::department_files(&self.pki_dir(), code)).await)
    }

    pub async fn as_dept(&self, code: &str) -> Channel {
        self.channel(pki::department_files(&self.pki_dir(), code)).await
    }

    pub async fn as_admin(&self) -> Channel {
        self.channel(pki::admin_files(&self.pki_dir())).await
    }

    pub async fn federation(&self) -> Federation {
        FederationServiceClient::new(self.channel(pki::admin_files(&self.pki_dir())).await)
    }

    /// A channel to this hub presenting `files` (issued by whatever CA), trusting this hub's CA.
    /// Lazy: a refused handshake shows as the first call's error.
    pub fn channel_as(&self, files: &CertFiles) -> Channel {
        let read = |p: &PathBuf| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&pki::ca_cert_path(&self.pki_dir()))))
            .identity(Identity::from_pem(read(&files.cert), read(&files.key)));
        Endpoint::from_shared(self.url())
            .expect("hub URL")
            .connect_timeout(Duration::from_secs(5))
            .tls_config(tls)
            .expect("TLS config")
            .connect_lazy()
    }

    /// Registers `other` as a peer of this hub.
    pub async fn register(&self, other: &Level, relation: v1::PeerRelation) -> v1::Peer {
        let parent = relation == v1::PeerRelation::Parent;
        ok(self
            .federation()
            .await
            .add_peer(v1::AddPeerRequest {
                division_code: other.division.into(),
                name: format!("{} 数据共享平台", other.division),
                address: other.url(),
                ca_pem: other.ca_pem(),
                relation: relation.into(),
                exposure: Some(v1::PeerExposure {
                    catalogue: parent,
                    classifications: vec![],
                }),
            })
            .await)
    }

    /// Events of the trail with this action, without their links.
    pub async fn audit_events(&self, action: &str) -> Vec<xinqiao_domain::audit::AuditEvent> {
        self.events(action).await.into_iter().map(|e| e.event).collect()
    }

    /// Events of the trail with this action.
    pub async fn events(&self, action: &str) -> Vec<xinqiao_domain::audit::ChainedEvent> {
        let filter = AuditFilter {
            action: Some(action.into()),
            ..AuditFilter::default()
        };
        self.store()
            .list_audit(&filter, 0, 10_000)
            .await
            .expect("list the trail")
    }

    pub async fn finish(mut self) {
        self.stop().await;
        if let (Backend::Postgres { url }, Some(schema)) = (&self.backend, &self.pg_schema) {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(url)
                .await
                .expect("connect to drop the schema");
            // The name is one this test made up (a UUID), never outside input.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&mut conn)
            .await
            .expect("drop the test schema");
        }
    }
}

async fn start_hub(
    config: Config,
    backend: Backend,
    pg_schema: Option<String>,
) -> Result<RunningHub, server::ServeError> {
    match (&backend, &pg_schema) {
        (Backend::Postgres { url }, Some(schema)) => {
            let store = PgStore::open_in_schema(url, schema)
                .await
                .unwrap_or_else(|e| panic!("{PG_URL_VAR} is set but the store does not open: {e}"));
            server::start_with_store(&config, Arc::new(store)).await
        }
        _ => server::start(&config).await,
    }
}

/// County → city → province, each registered with the next as its parent (catalogue exposed)
/// and the next registering it as its child.
pub async fn chain(backend: &Backend) -> (Level, Level, Level) {
    let city = Level::start(CITY, backend).await;
    linked(backend, city).await
}

/// As [`chain`], with the city on a runtime of its own, to be killed.
pub async fn chain_with_killable_city(backend: &Backend) -> (Level, Level, Level) {
    let city = Level::start_alone(CITY, backend).await;
    let (county, city, province) = linked(backend, city).await;
    add_province_department(&province, 1, "浙江省民政厅").await;
    (county, city, province)
}

async fn linked(backend: &Backend, city: Level) -> (Level, Level, Level) {
    let county = Level::start(COUNTY, backend).await;
    let province = Level::start(PROVINCE, backend).await;
    county.register(&city, v1::PeerRelation::Parent).await;
    city.register(&county, v1::PeerRelation::Child).await;
    city.register(&province, v1::PeerRelation::Parent).await;
    province.register(&city, v1::PeerRelation::Child).await;
    (county, city, province)
}

/// How long a change may take to travel county → city → province.
pub const PROPAGATION: Duration = Duration::from_secs(20);
/// The longest a relayed call or stream end may take to reach the caller.
pub const PROMPT: Duration = Duration::from_secs(20);

/// 浙江省民政厅: a department of the province only, in division 330000.
pub fn province_department() -> String {
    province_department_numbered(1)
}

/// The province's department numbered `serial` (1: 浙江省民政厅).
pub fn province_department_numbered(serial: u32) -> String {
    let first17 = format!("11330000MB009{serial:04}");
    let check = xinqiao_domain::identifiers::uscc_check_char(&first17).expect("alphabet");
    format!("{first17}{check}")
}

/// Registers the province's department numbered `serial` there and issues its certificate.
pub async fn add_province_department(province: &Level, serial: u32, name: &str) -> String {
    let code = province_department_numbered(serial);
    let mut request = register_request(&code, name);
    request.division_code = PROVINCE.into();
    ok(DirectoryServiceClient::new(province.as_admin().await)
        .register_department(request)
        .await);
    pki::issue(&province.pki_dir(), &Principal::Department(code.clone())).expect("the department's certificate");
    code
}

/// County → city → province, each registered with the next as its parent and the next
/// registering it as its child; a department of the province's own.
pub async fn chain_with_department(backend: &Backend) -> (Level, Level, Level) {
    let (county, city, province) = chain(backend).await;
    add_province_department(&province, 1, "浙江省民政厅").await;
    (county, city, province)
}

/// The county's SAMR opens a 有条件共享 residents dataset and publishes residents 1..=3.
pub async fn county_residents(county: &Level) -> String {
    let mut schemas = Schemas::new(county.as_admin().await);
    for (subject, text) in xinqiao_hub::registry::SHARED_SCHEMAS {
        ok(schemas
            .register_schema(v1::RegisterSchemaRequest {
                subject: (*subject).into(),
                schema_json: (*text).into(),
            })
            .await);
    }
    ok(schemas
        .register_schema(v1::RegisterSchemaRequest {
            subject: RESIDENTS.into(),
            schema_json: RESIDENTS_SCHEMA.into(),
        })
        .await);
    let entry = shared_as(
        residents_entry("余杭区低保对象信息"),
        v1::ShareType::Conditional,
        v1::ExchangeKind::Table,
    );
    let mut dept = DirectoryServiceClient::new(county.as_dept(SAMR).await);
    let code = ok(dept.create_entry(create(entry)).await).resource_code;
    ok(dept.submit_entry(submit(&code)).await);
    ok(DirectoryServiceClient::new(county.as_admin().await)
        .publish_entry(publish(&code))
        .await);
    let mut exchange = Exchange::new(county.as_dept(SAMR).await);
    ok(exchange
        .create_dataset(v1::CreateDatasetRequest {
            dataset: code.clone(),
            schema_subject: RESIDENTS.into(),
            schema_version: 0,
            key: vec!["resident_id".into()],
        })
        .await);
    publish_residents(county, &code, "b1", 1..=3).await;
    code
}

pub async fn publish_residents(county: &Level, code: &str, key: &str, serials: std::ops::RangeInclusive<u32>) {
    let changes = serials.map(|s| upsert_resident(s, &format!("张{s}"))).collect();
    ok(Exchange::new(county.as_dept(SAMR).await)
        .publish(batch(code, key, changes))
        .await);
}

/// Waits until the province's catalogue shows the county entry.
pub async fn until_aggregated(province: &Level, code: &str) {
    let started = Instant::now();
    let mut dept = DirectoryServiceClient::new(province.as_dept(&province_department()).await);
    loop {
        let found = search_all(&mut dept, keyword("低保对象")).await;
        if found.iter().any(|e| e.resource_code == code && e.origin_hub == COUNTY) {
            return;
        }
        assert!(
            started.elapsed() < PROPAGATION,
            "the county entry never reached the province"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next message of a relayed subscription, within [`PROMPT`].
pub async fn next(stream: &mut tonic::Streaming<v1::ChangeBatch>) -> Result<Option<v1::ChangeBatch>, tonic::Status> {
    tokio::time::timeout(PROMPT, stream.message())
        .await
        .expect("the relayed stream answers promptly, never hangs")
}

/// Reads batches until `count` changes came; their changes.
pub async fn changes(stream: &mut tonic::Streaming<v1::ChangeBatch>, count: usize) -> Vec<v1::Change> {
    let mut got = Vec::new();
    while got.len() < count {
        let batch = next(stream).await.expect("a batch").expect("the stream goes on");
        got.extend(batch.changes);
    }
    got
}
