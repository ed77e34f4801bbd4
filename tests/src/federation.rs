//! Three levels of hubs on loopback for the federation tests: county (330110) → city (330100) →
//! province (330000), each with its own PKI, CA and database, restartable on its port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use xinqiao_domain::identity::Principal;
use xinqiao_hub::pki::{self, CertFiles};
use xinqiao_hub::tls::{ClientIdentity, connect};
use xinqiao_hub::{Config, RunningHub, server};
use xinqiao_proto::v1;
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_proto::v1::federation_service_client::FederationServiceClient;
use xinqiao_store::{AuditFilter, PgStore, Store};

use crate::{Backend, Directory, PG_URL_VAR, ok};

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
}

impl Level {
    pub async fn start(division: &'static str, backend: &Backend) -> Level {
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
        let config = self.config();
        let hub = match (&self.backend, &self.pg_schema) {
            (Backend::Postgres { url }, Some(schema)) => {
                let store = PgStore::open_in_schema(url, schema)
                    .await
                    .unwrap_or_else(|e| panic!("{PG_URL_VAR} is set but the store does not open: {e}"));
                server::start_with_store(&config, Arc::new(store))
                    .await
                    .expect("the hub starts on PostgreSQL")
            }
            _ => server::start(&config).await.expect("the hub starts on SQLite"),
        };
        self.addr = hub.addr;
        self.store = Some(hub.store.clone());
        self.hub = Some(hub);
    }

    pub async fn stop(&mut self) {
        if let Some(hub) = self.hub.take() {
            hub.stop().await.expect("the hub stops gracefully");
        }
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

/// County → city → province, each registered with the next as its parent (catalogue exposed)
/// and the next registering it as its child.
pub async fn chain(backend: &Backend) -> (Level, Level, Level) {
    let county = Level::start(COUNTY, backend).await;
    let city = Level::start(CITY, backend).await;
    let province = Level::start(PROVINCE, backend).await;
    county.register(&city, v1::PeerRelation::Parent).await;
    city.register(&county, v1::PeerRelation::Child).await;
    city.register(&province, v1::PeerRelation::Parent).await;
    province.register(&city, v1::PeerRelation::Child).await;
    (county, city, province)
}
