//! The demo's federation part (平台级联): the demo's hub is the city's (330100); a county hub
//! (余杭区, 330110) and a province hub (浙江省, 330000) start beside it, each with its own CA and
//! SQLite database. The county's entry is found on the province, and a department of the
//! province applies, is granted and follows the county's dataset through the city, masked as
//! the county's provider granted it, until the provider revokes the grant.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tonic::Code;
use xinqiao_domain::access::china_day;
use xinqiao_domain::identity::Principal;
use xinqiao_hub::registry::SHARED_SCHEMAS;
use xinqiao_hub::{Config, RunningHub, pki, server};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::access_service_client::AccessServiceClient;
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_proto::v1::exchange_service_client::ExchangeServiceClient;
use xinqiao_proto::v1::federation_service_client::FederationServiceClient;
use xinqiao_proto::v1::schema_service_client::SchemaServiceClient;

use super::{channel, ok, person_entry, refused, resident, say, step};
use crate::CliResult;

pub const CITY: &str = "330100";
const COUNTY: &str = "330110";
const PROVINCE: &str = "330000";
/// 余杭区公安分局, the county's provider.
const COUNTY_POLICE: &str = "11330110MB0005005R";
/// 浙江省民政厅, a department of the province.
const PROVINCE_CIVIL_AFFAIRS: &str = "11330000MB0090001A";

/// A hub of the story besides the demo's own.
pub struct Level {
    pub division: &'static str,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    hub: Option<RunningHub>,
}

impl Level {
    /// A hub's PKI (with its hub identity) in `work/<division>/pki`.
    pub fn prepare(work: &Path, division: &str) -> CliResult<PathBuf> {
        let dir = work.join(division).join("pki");
        pki::init(&dir, &[]).map_err(|e| e.to_string())?;
        pki::issue(&dir, &Principal::Hub(division.into())).map_err(|e| e.to_string())?;
        Ok(dir)
    }

    /// The federation settings of a demo hub: quick pulls and retries.
    pub fn configure(config: &mut Config, division: &str) {
        config.federation.division = Some(division.into());
        config.federation.wait_secs = Some(2);
        config.federation.retry_secs = Some(1);
    }

    async fn start(work: &Path, division: &'static str) -> CliResult<Level> {
        let dir = Level::prepare(work, division)?;
        let mut config = Config {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            data_dir: Some(work.join(division)),
            ..Config::default()
        };
        Level::configure(&mut config, division);
        let hub = server::start(&config).await.map_err(|e| e.to_string())?;
        Ok(Level {
            division,
            addr: hub.addr,
            dir,
            hub: Some(hub),
        })
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn ca_pem(&self) -> CliResult<String> {
        std::fs::read_to_string(pki::ca_cert_path(&self.dir)).map_err(|e| e.to_string())
    }

    async fn admin(&self) -> CliResult<tonic::transport::Channel> {
        channel(self.addr, &self.dir, pki::admin_files(&self.dir)).await
    }

    async fn dept(&self, code: &str) -> CliResult<tonic::transport::Channel> {
        channel(self.addr, &self.dir, pki::department_files(&self.dir, code)).await
    }

    /// Registers a department here (its certificate issued by this hub's CA).
    async fn register(&self, code: &str, name: &str) -> CliResult {
        ok(DirectoryServiceClient::new(self.admin().await?)
            .register_department(pb::RegisterDepartmentRequest {
                code: code.into(),
                name: name.into(),
                division_code: self.division.into(),
                contact: String::new(),
            })
            .await)?;
        pki::issue(&self.dir, &Principal::Department(code.into())).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Registers `other` as a peer here; a parent is shown the catalogue.
    async fn add_peer(&self, other: &Level, relation: pb::PeerRelation) -> CliResult {
        let name = match other.division {
            COUNTY => "余杭区数据共享平台",
            CITY => "杭州市数据共享平台",
            _ => "浙江省数据共享平台",
        };
        ok(FederationServiceClient::new(self.admin().await?)
            .add_peer(pb::AddPeerRequest {
                division_code: other.division.into(),
                name: name.into(),
                address: other.url(),
                ca_pem: other.ca_pem()?,
                relation: relation.into(),
                exposure: Some(pb::PeerExposure {
                    catalogue: relation == pb::PeerRelation::Parent,
                    classifications: vec![],
                }),
            })
            .await)?;
        say(format!(
            "hub {} registers hub {} ({name}) as its {}",
            self.division,
            other.division,
            match relation {
                pb::PeerRelation::Parent => "parent (上级平台), the catalogue exposed to it",
                pb::PeerRelation::Child => "child (下级平台)",
                _ => "peer",
            }
        ));
        Ok(())
    }

    async fn stop(&mut self) -> CliResult {
        if let Some(hub) = self.hub.take() {
            hub.stop().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The part of the story across three hubs. `city` is the demo's own hub.
pub async fn run(n: &mut u32, work: &Path, city_addr: SocketAddr, city_dir: &Path) -> CliResult {
    step(
        n,
        "Two more hubs start on loopback: the county's (余杭区, 330110) and the province's (浙江省, 330000), each with its own CA and SQLite database; this hub is the city's (杭州市, 330100). They register each other as peers (平台级联), each trusting the other's CA for that hub's identity only.",
    );
    let mut county = Level::start(work, COUNTY).await?;
    let mut province = Level::start(work, PROVINCE).await?;
    let city = Level {
        division: CITY,
        addr: city_addr,
        dir: city_dir.to_path_buf(),
        hub: None,
    };
    county.add_peer(&city, pb::PeerRelation::Parent).await?;
    city.add_peer(&county, pb::PeerRelation::Child).await?;
    city.add_peer(&province, pb::PeerRelation::Parent).await?;
    province.add_peer(&city, pb::PeerRelation::Child).await?;

    step(
        n,
        "余杭区公安分局 publishes 人口基础信息 on the county hub, shared on condition (有条件共享), with three residents.",
    );
    county.register(COUNTY_POLICE, "余杭区公安分局").await?;
    province.register(PROVINCE_CIVIL_AFFAIRS, "浙江省民政厅").await?;
    let mut schemas = SchemaServiceClient::new(county.admin().await?);
    for (subject, json) in SHARED_SCHEMAS {
        ok(schemas
            .register_schema(pb::RegisterSchemaRequest {
                subject: (*subject).into(),
                schema_json: (*json).into(),
            })
            .await)?;
    }
    let mut entry = person_entry();
    entry.name = "余杭区人口基础信息".into();
    let mut provider = DirectoryServiceClient::new(county.dept(COUNTY_POLICE).await?);
    let code = ok(provider
        .create_entry(pb::CreateEntryRequest { content: Some(entry) })
        .await)?
    .resource_code;
    ok(provider
        .submit_entry(pb::SubmitEntryRequest {
            resource_code: code.clone(),
            expected_version: 0,
        })
        .await)?;
    ok(DirectoryServiceClient::new(county.admin().await?)
        .publish_entry(pb::PublishEntryRequest {
            resource_code: code.clone(),
            expected_version: 0,
        })
        .await)?;
    let mut provider_exchange = ExchangeServiceClient::new(county.dept(COUNTY_POLICE).await?);
    ok(provider_exchange
        .create_dataset(pb::CreateDatasetRequest {
            dataset: code.clone(),
            schema_subject: "person".into(),
            schema_version: 0,
            key: vec!["resident_id".into()],
        })
        .await)?;
    let publish = |key: &str, people: Vec<serde_json::Value>| pb::PublishRequest {
        dataset: code.clone(),
        idempotency_key: key.into(),
        changes: people
            .iter()
            .map(|p| pb::RecordChange {
                change: Some(pb::record_change::Change::Upsert(p.to_string().into_bytes())),
            })
            .collect(),
        policy: pb::BatchPolicy::RejectAll as i32,
        lenient: false,
    };
    ok(provider_exchange
        .publish(publish(
            "county-1",
            vec![
                resident("33011019900307001", "王芳", "女", "1990-03-07"),
                resident("33011019751102003", "陈刚", "男", "1975-11-02"),
                resident("33011020000101005", "周杰", "男", "2000-01-01"),
            ],
        ))
        .await)?;
    say(format!(
        "{code} 余杭区人口基础信息 published on hub {COUNTY} with 3 residents"
    ));

    step(
        n,
        "The city pulls the county's catalogue changes, the province the city's (目录汇聚): 浙江省民政厅 searches its own hub and finds the county's entry with its origin.",
    );
    let mut searcher = DirectoryServiceClient::new(province.dept(PROVINCE_CIVIL_AFFAIRS).await?);
    let started = Instant::now();
    let found = loop {
        let page = ok(searcher
            .search_entries(pb::SearchEntriesRequest {
                keyword: "人口基础信息".into(),
                ..pb::SearchEntriesRequest::default()
            })
            .await)?;
        if let Some(e) = page
            .entries
            .into_iter()
            .find(|e| e.resource_code == code && e.origin_hub == COUNTY)
        {
            break e;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err("the county's entry never reached the province".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    say(format!(
        "{} {} — {} (provider {}), held on hub {}, via hub {}",
        found.resource_code,
        found.content.as_ref().map(|c| c.name.as_str()).unwrap_or(""),
        found.provider_name,
        found.provider_code,
        found.origin_hub,
        found.via_hub
    ));
    // Resource codes are unique per hub only (this hub's 市公安局 has a 101001/000001 too): a
    // dataset of another hub is named with its origin.
    let remote = format!("{COUNTY}:{code}");
    say(format!(
        "a code held by several hubs is named with its origin: {remote}"
    ));

    step(
        n,
        "浙江省民政厅 pulls it through its own hub, which relays the call to the city and the city to the county, each over mutual TLS as itself, naming the department. The county decides under its own rules: no grant yet.",
    );
    let mut reader = ExchangeServiceClient::new(province.dept(PROVINCE_CIVIL_AFFAIRS).await?);
    let fetch = || pb::FetchRequest {
        dataset: remote.clone(),
        after_sequence: 0,
        limit: 0,
        purpose: String::new(),
        grant_id: String::new(),
    };
    say(refused(reader.fetch(fetch()).await, Code::PermissionDenied)?);

    step(
        n,
        "It applies through its own hub; the request is filed on the county, where 余杭区公安分局 approves it with the ID number and the name masked (脱敏).",
    );
    let today = china_day(chrono::Utc::now());
    let request = ok(AccessServiceClient::new(province.dept(PROVINCE_CIVIL_AFFAIRS).await?)
        .request_access(pb::RequestAccessRequest {
            application: Some(pb::AccessApplication {
                dataset: remote.clone(),
                purpose: "最低生活保障对象户籍核验".into(),
                scope: "省民政厅社会救助处".into(),
                fields: ["resident_id", "name", "gender"].map(String::from).to_vec(),
                period_from: today.to_string(),
                period_until: (today + chrono::Duration::days(90)).to_string(),
                business_system: "全省社会救助信息系统".into(),
                operations: vec![],
            }),
        })
        .await)?;
    say(format!(
        "request {} filed on hub {COUNTY}: applicant {}, provider {}",
        request.request_id, request.applicant_code, request.provider_code
    ));
    let mut county_access = AccessServiceClient::new(county.dept(COUNTY_POLICE).await?);
    let mask = |field: &str| pb::FieldMask {
        field: field.into(),
        rule: field.into(),
    };
    let approved = ok(county_access
        .approve_request(pb::ApproveRequestRequest {
            request_id: request.request_id.clone(),
            fields: vec![],
            masks: vec![mask("resident_id"), mask("name")],
            expires_at: None,
            note: String::new(),
            operations: vec![],
        })
        .await)?;
    say(format!("granted: {}", approved.grant_id));

    step(
        n,
        "浙江省民政厅 follows the dataset through the chain: the records are shaped on the county, as granted, before they leave it; a record published there arrives live.",
    );
    let mut stream = ok(reader
        .subscribe(pb::SubscribeRequest {
            dataset: remote.clone(),
            ..pb::SubscribeRequest::default()
        })
        .await)?;
    let mut seen = 0;
    let mut published_more = false;
    while seen < 4 {
        let batch = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .map_err(|_| "the relayed stream went quiet")?
            .map_err(crate::client::explain)?
            .ok_or("the relayed stream ended")?;
        for change in &batch.changes {
            let mut line = Vec::new();
            crate::pull::write_change(&mut line, change).map_err(|e| e.to_string())?;
            say(String::from_utf8_lossy(&line).trim_end());
            seen += 1;
        }
        if seen >= 3 && !published_more {
            published_more = true;
            ok(provider_exchange
                .publish(publish(
                    "county-2",
                    vec![resident("33011019881212007", "吴敏", "女", "1988-12-12")],
                ))
                .await)?;
        }
    }

    step(
        n,
        "余杭区公安分局 revokes the grant on the county: the province's follower is cut off at once.",
    );
    ok(county_access
        .revoke_grant(pb::RevokeGrantRequest {
            grant_id: approved.grant_id.clone(),
            reason: "核验事项已办结".into(),
        })
        .await)?;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
            Err(_) => return Err("the follower was not cut off".into()),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return Err("the stream ended without a reason".into()),
            Ok(Err(status)) => break status,
        }
    };
    say(format!("{:?}: {}", ended.code(), ended.message()));

    county.stop().await?;
    province.stop().await?;
    Ok(())
}
