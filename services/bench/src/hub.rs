//! Hubs under test, in this process, and the client side of the measured calls: publishing with
//! several batches in flight, draining a subscription, and unary calls at a fixed concurrency.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use xinqiao_hub::config::BenchmarkSwitches;
use xinqiao_hub::pki::{self, CertFiles};
use xinqiao_hub::registry::SHARED_SCHEMAS;
use xinqiao_hub::tls::{ClientIdentity, connect};
use xinqiao_hub::{Config, RunningHub, server};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_proto::v1::exchange_service_client::ExchangeServiceClient;
use xinqiao_proto::v1::schema_service_client::SchemaServiceClient;
use xinqiao_store::Store;

use crate::records;
use crate::report::{Ctx, Res, quantile};

pub type Exchange = ExchangeServiceClient<Channel>;
pub type Directory = DirectoryServiceClient<Channel>;

/// 市市场监督管理局: the provider of every benchmark dataset.
pub const PROVIDER: &str = "11330100MB00010011";
/// Pages of subscribed changes the client asks for, as `xinqiao pull` does by default.
pub const DRAIN_PAGE: u32 = 1000;
const MAX_DECODED: usize = 256 * 1024 * 1024;

/// A hub serving in this process.
pub struct Hub {
    running: RunningHub,
    pub port: u16,
    pub plaintext: bool,
    pki: PathBuf,
}

impl Hub {
    /// Starts a hub on 127.0.0.1 (a free port) over `store`, with the development PKI under
    /// `data_dir/pki`.
    pub async fn start(data_dir: &Path, store: Arc<dyn Store>, switches: BenchmarkSwitches) -> Res<Hub> {
        let config = Config {
            listen: Some("127.0.0.1:0".parse().ctx("address")?),
            data_dir: Some(data_dir.to_path_buf()),
            benchmark: switches.clone(),
            ..Config::default()
        };
        let running = server::start_with_store(&config, store).await.ctx("starting a hub")?;
        Ok(Hub {
            port: running.addr.port(),
            plaintext: switches.plaintext_as.is_some(),
            running,
            pki: config.pki_dir(),
        })
    }

    /// One channel (one HTTP/2 connection) as `files`' owner; over plaintext the hub takes every
    /// caller to be its fixed identity instead.
    pub async fn channel(&self, files: CertFiles) -> Res<Channel> {
        if self.plaintext {
            return Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port))
                .ctx("address")?
                .connect_timeout(Duration::from_secs(10))
                .connect()
                .await
                .ctx("connecting over plaintext");
        }
        let identity = ClientIdentity {
            ca: pki::ca_cert_path(&self.pki),
            cert: files.cert,
            key: files.key,
        };
        connect(&format!("https://127.0.0.1:{}", self.port), &identity)
            .await
            .ctx("connecting over mTLS")
    }

    pub async fn provider_channel(&self) -> Res<Channel> {
        self.channel(pki::department_files(&self.pki, PROVIDER)).await
    }

    pub async fn admin_channel(&self) -> Res<Channel> {
        self.channel(pki::admin_files(&self.pki)).await
    }

    /// Waits until the hub's search index holds `entries` entries in its posting lists, then
    /// for its per-second reads to pass the last changes (they re-read `search_index::OVERLAP`
    /// back; a second to spare):
    /// B5 measures searches in the steady state, not while the index takes in a catalogue
    /// written behind its back. Gives up after `limit`, saying how far it got.
    pub async fn index_settled(&self, entries: usize, limit: Duration) -> Res<()> {
        let search = &self.running.catalogue_search;
        let started = Instant::now();
        while !search.holds_built(entries) {
            if started.elapsed() > limit {
                let (held, _) = search.size();
                return Err(format!(
                    "the hub's search index holds {held} of {entries} entries (or has some not built in) after {limit:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(xinqiao_hub::search_index::OVERLAP + Duration::from_secs(1)).await;
        Ok(())
    }

    pub async fn stop(self) -> Res<()> {
        self.running.stop().await.ctx("stopping a hub")
    }
}

pub fn exchange(channel: Channel) -> Exchange {
    ExchangeServiceClient::new(channel).max_decoding_message_size(MAX_DECODED)
}

fn ok<T>(r: Result<tonic::Response<T>, tonic::Status>, what: &str) -> Res<T> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| format!("{what}: {:?} {}", s.code(), s.message()))
}

/// Catalogue entries and datasets, made through a hub over mTLS by the admin and the provider.
pub struct Catalog {
    admin: Directory,
    provider: Directory,
    provider_exchange: Exchange,
    made: usize,
}

const KINDS: &[(&str, &str)] = &[
    (
        "企业登记信息",
        "本市登记注册企业的营业执照信息，包括统一社会信用代码、名称、法定代表人和经营状态。",
    ),
    ("企业年报信息", "企业年度报告公示信息，含资产状况、从业人数和股东出资。"),
    ("食品经营许可信息", "食品经营许可证的发证、变更和注销信息。"),
    ("行政许可信息", "市场主体取得的行政许可决定信息。"),
];

fn entry_content(i: usize) -> pb::EntryContent {
    let (name, summary) = KINDS[i % KINDS.len()];
    records::legal_entity_entry(format!("{name}（基准测试 {i}）"), summary)
}

impl Catalog {
    /// Registers the sample departments and the shared schemas in the hub's store.
    pub async fn prepare(hub: &Hub, store: &dyn Store) -> Res<Catalog> {
        server::register_sample_departments(store)
            .await
            .ctx("registering departments")?;
        let admin_channel = hub.admin_channel().await?;
        let mut schemas = SchemaServiceClient::new(admin_channel.clone());
        for (subject, json) in SHARED_SCHEMAS {
            ok(
                schemas
                    .register_schema(pb::RegisterSchemaRequest {
                        subject: (*subject).into(),
                        schema_json: (*json).into(),
                    })
                    .await,
                "registering a shared schema",
            )?;
        }
        let provider = hub.provider_channel().await?;
        Ok(Catalog {
            admin: DirectoryServiceClient::new(admin_channel),
            provider: DirectoryServiceClient::new(provider.clone()),
            provider_exchange: exchange(provider),
            made: 0,
        })
    }

    /// Entries made so far.
    pub fn made(&self) -> usize {
        self.made
    }

    /// A published catalogue entry of the provider; returns its resource code.
    pub async fn published_entry(&mut self) -> Res<String> {
        let content = entry_content(self.made);
        self.made += 1;
        let created = ok(
            self.provider
                .create_entry(pb::CreateEntryRequest { content: Some(content) })
                .await,
            "creating an entry",
        )?;
        let code = created.resource_code;
        ok(
            self.provider
                .submit_entry(pb::SubmitEntryRequest {
                    resource_code: code.clone(),
                    expected_version: 0,
                })
                .await,
            "submitting an entry",
        )?;
        ok(
            self.admin
                .publish_entry(pb::PublishEntryRequest {
                    resource_code: code.clone(),
                    expected_version: 0,
                })
                .await,
            "publishing an entry",
        )?;
        Ok(code)
    }

    /// A legal-entity table dataset keyed by uscc, on a new published entry.
    pub async fn dataset(&mut self) -> Res<String> {
        let code = self.published_entry().await?;
        let dataset = ok(
            self.provider_exchange
                .create_dataset(pb::CreateDatasetRequest {
                    dataset: code,
                    schema_subject: "legal-entity".into(),
                    schema_version: 0,
                    key: vec!["uscc".into()],
                })
                .await,
            "creating a dataset",
        )?;
        Ok(dataset.dataset)
    }
}

/// Publish requests of `batch` records each for records `from..to`, keys prefixed by `tag`.
pub fn requests(
    dataset: &str,
    tag: &str,
    from: u64,
    to: u64,
    batch: usize,
) -> impl Iterator<Item = pb::PublishRequest> + Send + use<> {
    let dataset = dataset.to_string();
    let tag = tag.to_string();
    let batch = batch as u64;
    (from..to).step_by(batch as usize).map(move |start| {
        let end = (start + batch).min(to);
        pb::PublishRequest {
            dataset: dataset.clone(),
            idempotency_key: format!("{tag}-{start}"),
            changes: (start..end)
                .map(|i| pb::RecordChange {
                    change: Some(pb::record_change::Change::Upsert(records::record(i).into_bytes())),
                })
                .collect(),
            policy: pb::BatchPolicy::RejectAll as i32,
            lenient: false,
        }
    })
}

/// The same, from records already made (`texts[k]` is record `from + k`).
pub fn requests_from(dataset: &str, tag: &str, from: u64, texts: &[String], batch: usize) -> Vec<pb::PublishRequest> {
    texts
        .chunks(batch)
        .enumerate()
        .map(|(n, chunk)| pb::PublishRequest {
            dataset: dataset.to_string(),
            idempotency_key: format!("{tag}-{}", from + (n * batch) as u64),
            changes: chunk
                .iter()
                .map(|t| pb::RecordChange {
                    change: Some(pb::record_change::Change::Upsert(t.clone().into_bytes())),
                })
                .collect(),
            policy: pb::BatchPolicy::RejectAll as i32,
            lenient: false,
        })
        .collect()
}

/// Publishes the batches over one PublishStream with at most `window` unacknowledged, as
/// `xinqiao publish` does; fails unless exactly `expected` records are accepted and none rejected.
pub async fn publish_stream(
    client: &mut Exchange,
    batches: impl Iterator<Item = pb::PublishRequest> + Send + 'static,
    window: usize,
    expected: u64,
) -> Res<()> {
    let permits = Arc::new(Semaphore::new(window));
    let (tx, rx) = mpsc::channel(window.max(1));
    let sender = tokio::spawn({
        let permits = permits.clone();
        async move {
            for batch in batches {
                match permits.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => return,
                }
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
        }
    });
    let result = async {
        let mut answers = ok(client.publish_stream(ReceiverStream::new(rx)).await, "PublishStream")?;
        let mut accepted = 0u64;
        while let Some(answer) = answers.message().await.map_err(|s| format!("PublishStream: {s}"))? {
            if !answer.rejected.is_empty() {
                let first = &answer.rejected[0];
                return Err(format!(
                    "the hub rejected {} records of batch {}, e.g. #{}: {:?}",
                    answer.rejected.len(),
                    answer.idempotency_key,
                    first.index,
                    first.errors.first().map(|e| (&e.instance_pointer, &e.message))
                ));
            }
            accepted += u64::from(answer.accepted);
            permits.add_permits(1);
        }
        if accepted != expected {
            return Err(format!("the hub accepted {accepted} records, not {expected}"));
        }
        Ok(())
    }
    .await;
    sender.abort();
    result
}

/// Subscribes from the start and reads until the change numbered `until` has arrived. Returns the
/// changes and record bytes received. The data is only counted, so that the client, which shares
/// the process with the hub, costs as little as it can.
pub async fn drain(client: &mut Exchange, dataset: &str, until: u64) -> Res<(u64, u64)> {
    let mut stream = ok(
        client
            .subscribe(pb::SubscribeRequest {
                dataset: dataset.into(),
                after_sequence: 0,
                consumer: String::new(),
                max_batch: DRAIN_PAGE,
                purpose: "benchmark drain".into(),
                grant_id: String::new(),
            })
            .await,
        "Subscribe",
    )?;
    let (mut changes, mut bytes) = (0u64, 0u64);
    while let Some(batch) = stream.message().await.map_err(|s| format!("Subscribe: {s}"))? {
        changes += batch.changes.len() as u64;
        bytes += batch.changes.iter().map(|c| c.record.len() as u64).sum::<u64>();
        if batch.changes.last().is_some_and(|c| c.sequence >= until) {
            return Ok((changes, bytes));
        }
    }
    Err(format!(
        "the subscription ended after {changes} changes, before #{until}"
    ))
}

/// One kind of unary call of B5.
#[derive(Clone)]
pub enum Unary {
    GetEntry(Directory, Arc<Vec<String>>),
    /// Searches for each keyword in turn.
    Search(Directory, Arc<Vec<String>>),
    /// The same searches, each answer's entries counted rather than built (`skim`).
    SearchSkimmed(tonic::client::Grpc<Channel>, Arc<Vec<String>>),
    Health(HealthClient<Channel>),
}

impl Unary {
    async fn call(&mut self, n: usize) -> Result<(), tonic::Status> {
        match self {
            Unary::GetEntry(client, codes) => {
                let resource_code = codes[n % codes.len()].clone();
                client
                    .get_entry(pb::GetEntryRequest {
                        resource_code,
                        version: 0,
                    })
                    .await?;
            }
            Unary::Search(client, keywords) => {
                client
                    .search_entries(pb::SearchEntriesRequest {
                        keyword: keywords[n % keywords.len()].clone(),
                        page_size: 20,
                        ..Default::default()
                    })
                    .await?;
            }
            Unary::SearchSkimmed(grpc, keywords) => {
                let request = pb::SearchEntriesRequest {
                    keyword: keywords[n % keywords.len()].clone(),
                    page_size: 20,
                    ..Default::default()
                };
                crate::skim::search(grpc, request).await?;
            }
            Unary::Health(client) => {
                client.check(HealthCheckRequest { service: String::new() }).await?;
            }
        }
        Ok(())
    }
}

/// Calls per second and latency quantiles of one load run.
pub struct Load {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `concurrency` callers on the same channel, each calling back to back for `duration`.
pub async fn unary_load(op: &Unary, concurrency: usize, duration: Duration) -> Res<Load> {
    // One untimed call: the connection and the hub's caches are warm for every contender alike.
    op.clone().call(0).await.map_err(|s| format!("warm-up call: {s}"))?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for t in 0..concurrency {
        let mut op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(4096);
            let mut n = t;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                op.call(n).await.map_err(|s| format!("unary call: {s}"))?;
                latencies.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                n += concurrency;
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.ctx("load task")??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(Load {
        rate: all.len() as f64 / elapsed,
        p50_ms: quantile(&all, 0.50) / 1000.0,
        p99_ms: quantile(&all, 0.99) / 1000.0,
    })
}
