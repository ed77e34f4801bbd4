//! One load phase: N publishers and M followers, each over its own mutual-TLS connection, against
//! one dataset of a hub process, for a set time; a row of figures every interval, and at the end a
//! summary with the delivery check (every follower got every sequence once, in order).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tonic::transport::Channel;
use xinqiao_hub::pki::{self, CertFiles};
use xinqiao_hub::tls::{ClientIdentity, connect};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_proto::v1::exchange_service_client::ExchangeServiceClient;

use crate::hubproc::{self, Memory};
use crate::{Res, records};

type Exchange = ExchangeServiceClient<Channel>;

/// 市市场监督管理局: the provider of the dataset, and every publisher's identity.
pub const PROVIDER: &str = "11330100MB00010011";
/// The purpose followers give (用途), recorded in the audit trail.
const PURPOSE: &str = "负载测试 load test";
/// A call that takes longer than this counts as an error (DeadlineExceeded) and is retried.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before retrying a failed call.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Record numbers (hence USCCs, whose organisation part has nine digits) are split among the
/// publishers, so that each writes keys of its own.
const KEY_SPACE: u64 = 1_000_000_000;
/// Changes larger than this are refused by this client.
const MAX_DECODED: usize = 64 * 1024 * 1024;

/// Where the hub is and how to prove who we are.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub pki: PathBuf,
}

impl Target {
    /// A new mutual-TLS connection (one HTTP/2 connection per channel) as `files`' owner.
    pub async fn channel(&self, files: CertFiles) -> Res<Channel> {
        let identity = ClientIdentity {
            ca: pki::ca_cert_path(&self.pki),
            cert: files.cert,
            key: files.key,
        };
        connect(&self.url, &identity)
            .await
            .map_err(|e| format!("connecting over mTLS: {e}"))
    }

    async fn exchange(&self, department: &str) -> Res<Exchange> {
        let channel = self.channel(pki::department_files(&self.pki, department)).await?;
        Ok(ExchangeServiceClient::new(channel).max_decoding_message_size(MAX_DECODED))
    }
}

fn ok<T>(r: Result<tonic::Response<T>, tonic::Status>, what: &str) -> Res<T> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| format!("{what}: {:?} {}", s.code(), s.message()))
}

/// A published, unconditionally shared catalogue entry of the provider and a `legal-entity`
/// table dataset keyed by `uscc` on it, as the benchmark makes them (admin and provider over mTLS).
pub async fn open_dataset(target: &Target, tag: &str) -> Res<String> {
    let admin = DirectoryServiceClient::new(target.channel(pki::admin_files(&target.pki)).await?);
    let provider_channel = target.channel(pki::department_files(&target.pki, PROVIDER)).await?;
    let mut provider = DirectoryServiceClient::new(provider_channel.clone());
    let content = records::legal_entity_entry(
        format!("企业登记信息（负载测试 {tag}）"),
        "本市登记注册企业的营业执照信息，包括统一社会信用代码、名称、法定代表人和经营状态。",
    );
    let code = ok(
        provider
            .create_entry(pb::CreateEntryRequest { content: Some(content) })
            .await,
        "creating an entry",
    )?
    .resource_code;
    ok(
        provider
            .submit_entry(pb::SubmitEntryRequest {
                resource_code: code.clone(),
                expected_version: 0,
            })
            .await,
        "submitting the entry",
    )?;
    ok(
        admin
            .clone()
            .publish_entry(pb::PublishEntryRequest {
                resource_code: code.clone(),
                expected_version: 0,
            })
            .await,
        "publishing the entry",
    )?;
    let mut exchange = ExchangeServiceClient::new(provider_channel);
    let dataset = ok(
        exchange
            .create_dataset(pb::CreateDatasetRequest {
                dataset: code,
                schema_subject: "legal-entity".into(),
                schema_version: 0,
                key: vec!["uscc".into()],
            })
            .await,
        "creating the dataset",
    )?;
    Ok(dataset.dataset)
}

/// How one phase runs.
#[derive(Debug, Clone)]
pub struct PhaseConfig {
    pub name: String,
    pub publishers: usize,
    pub followers: usize,
    pub batch: usize,
    pub in_flight: usize,
    /// Records per second for all publishers together; None: as fast as the hub answers.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub interval: Duration,
    pub drain_timeout: Duration,
    /// Changes per Subscribe message (max_batch).
    pub follow_page: u32,
    /// Followers acknowledge after every this many messages.
    pub ack_every: u32,
    /// Followers must receive everything published (they get `drain_timeout` to catch up after
    /// publishing stops). Without it (the peak) they stop with the publishers, and only the order
    /// of what they received is checked.
    pub require_complete: bool,
    /// Publishers wait while the slowest follower is more than this many changes behind (the
    /// peak: the rate at which followers keep up); None: they never wait for followers.
    pub max_lag: Option<u64>,
    /// Further mutual-TLS connections, of the sample departments in turn, opened before the clock
    /// starts and held through the phase; each makes a call when opened and another at the end.
    pub held_connections: usize,
}

/// The connections held through a phase and what became of their calls.
#[derive(Debug, Clone, Default)]
pub struct HeldReport {
    pub connections: usize,
    /// Seconds from the first handshake to the last connection's first answer.
    pub opened_seconds: f64,
    /// Calls answered when the connections were opened, and at the end of the phase.
    pub answered_at_start: usize,
    pub answered_at_end: usize,
    /// The hub's resident memory with every connection open, before the load began.
    pub hub_rss_opened: u64,
}

/// Handshakes at most this many at a time; more only wait in the listen backlog.
const HANDSHAKES_AT_ONCE: usize = 200;
/// Calls on held connections at most this many at a time: more only queue for the database pool.
const HELD_CALLS_AT_ONCE: usize = 250;

/// Opens `n` connections (the sample departments in turn) and makes one call on each.
async fn open_held(target: &Target, n: usize, shared: &Shared) -> Res<(Vec<Channel>, usize)> {
    let departments: Vec<&str> = pki::SAMPLE_DEPARTMENTS.iter().map(|d| d.code).collect();
    let mut channels = Vec::with_capacity(n);
    let mut handshakes = tokio::task::JoinSet::new();
    for i in 0..n {
        if handshakes.len() >= HANDSHAKES_AT_ONCE
            && let Some(done) = handshakes.join_next().await
        {
            channels.push(done.map_err(|e| format!("a handshake task: {e}"))??);
        }
        let (target, files) = (
            target.clone(),
            pki::department_files(&target.pki, departments[i % departments.len()]),
        );
        handshakes.spawn(async move { target.channel(files).await });
    }
    while let Some(done) = handshakes.join_next().await {
        channels.push(done.map_err(|e| format!("a handshake task: {e}"))??);
    }
    let answered = call_held(&channels, shared).await;
    Ok((channels, answered))
}

/// One WhoAmI on every held connection; a refusal counts as an error of the phase.
async fn call_held(channels: &[Channel], shared: &Shared) -> usize {
    let mut calls = tokio::task::JoinSet::new();
    let mut answered = 0;
    let mut settle = |result: Result<Result<(), tonic::Status>, tokio::task::JoinError>| match result {
        Ok(Ok(())) => answered += 1,
        Ok(Err(status)) => shared.status("WhoAmI (held connection)", &status),
        Err(e) => shared.error("held connection", "TaskFailed", &e.to_string()),
    };
    for channel in channels {
        if calls.len() >= HELD_CALLS_AT_ONCE
            && let Some(done) = calls.join_next().await
        {
            settle(done);
        }
        let mut directory = DirectoryServiceClient::new(channel.clone());
        calls.spawn(async move {
            tokio::time::timeout(CALL_TIMEOUT, directory.who_am_i(pb::WhoAmIRequest {}))
                .await
                .map_err(|_| tonic::Status::deadline_exceeded("no answer within the call timeout"))?
                .map(drop)
        });
    }
    while let Some(done) = calls.join_next().await {
        settle(done);
    }
    answered
}

/// What the hub's database takes on disk.
#[derive(Clone)]
pub enum DbSize {
    Sqlite(PathBuf),
    Pg(sqlx::PgPool, String),
}

impl DbSize {
    pub async fn bytes(&self) -> Option<u64> {
        match self {
            DbSize::Sqlite(file) => {
                let mut total = 0;
                for suffix in ["", "-wal", "-shm"] {
                    let mut name = file.clone().into_os_string();
                    name.push(suffix);
                    total += std::fs::metadata(&name).map(|m| m.len()).unwrap_or(0);
                }
                Some(total)
            }
            DbSize::Pg(pool, schema) => sqlx::query_scalar::<_, i64>(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')",
            )
            .bind(schema)
            .fetch_one(pool)
            .await
            .ok()
            .map(|b| b.max(0) as u64),
        }
    }
}

/// What a follower has seen.
#[derive(Default)]
struct Follower {
    delivered: AtomicU64,
    position: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    /// Changes at or below the acknowledged position sent again after a resubscription (at least
    /// once delivery: expected, not a fault).
    redelivered: AtomicU64,
    resubscribed: AtomicU64,
    acknowledged: AtomicU64,
    /// The highest position an acknowledgement was sent for (it may have been stored by the hub
    /// without the answer arriving, when the follower was stopped).
    ack_sent: AtomicU64,
    bad_records: AtomicU64,
    problems: Mutex<Vec<String>>,
}

impl Follower {
    fn problem(&self, text: String) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < 5 {
            p.push(text);
        }
    }
}

/// Counters shared by the tasks of a phase.
#[derive(Default)]
struct Shared {
    published: AtomicU64,
    batches: AtomicU64,
    replayed: AtomicU64,
    rejected: AtomicU64,
    /// The highest sequence number a publish was answered with.
    head: AtomicU64,
    /// Publish latencies (µs) since the last row, and of the whole phase.
    interval_latencies: Mutex<Vec<u32>>,
    latencies: Mutex<Vec<u32>>,
    /// Acknowledge latencies (µs) of the whole phase.
    ack_latencies: Mutex<Vec<u32>>,
    errors: Mutex<BTreeMap<String, u64>>,
    error_samples: Mutex<Vec<String>>,
    followers: Vec<Follower>,
}

impl Shared {
    fn error(&self, call: &str, code: &str, message: &str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code.to_string())
            .or_default() += 1;
        let mut samples = self.error_samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() < 20 {
            samples.push(format!("{call}: {code}: {message}"));
        }
    }

    fn status(&self, call: &str, status: &tonic::Status) {
        self.error(call, &format!("{:?}", status.code()), status.message());
    }

    fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn slowest(&self) -> u64 {
        self.followers
            .iter()
            .map(|f| f.position.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
}

/// A token bucket of records: a batch waits until its records are covered.
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, capacity: f64) -> Self {
        Bucket {
            rate,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Takes `n` tokens (going into debt if need be) and says when they are covered.
    fn reserve(&mut self, n: f64) -> Instant {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.last = now;
        self.tokens -= n;
        if self.tokens >= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// One row of figures, for the interval that ends at `elapsed`.
#[derive(Debug, Clone)]
pub struct Row {
    pub elapsed: f64,
    pub published_total: u64,
    pub published_rate: f64,
    /// Changes received per second by all followers together.
    pub delivered_rate: f64,
    /// Changes per second received by the follower that received fewest.
    pub slowest_rate: f64,
    pub slowest_total: u64,
    pub batches: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub lag: u64,
    pub errors: BTreeMap<String, u64>,
    pub hub: Memory,
    pub hub_cpu: f64,
    pub load_cpu: f64,
    /// The whole machine's busy CPU (100 % per core): the rest is the database server and
    /// whatever else runs on the machine.
    pub machine_cpu: f64,
    pub db_bytes: Option<u64>,
}

impl Row {
    pub fn header() -> String {
        format!(
            "{:>7} {:>9} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6} {:>9}  {}",
            "elapsed",
            "publ/s",
            "deliv/s",
            "slowest/s",
            "p50 ms",
            "p99 ms",
            "lag",
            "hub RSS",
            "hub HWM",
            "hubCPU",
            "ldCPU",
            "allCPU",
            "db",
            "errors"
        )
    }

    pub fn line(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let errors = if self.errors.is_empty() {
            "0".to_string()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "{:>6.0}s {:>9.0} {:>10.0} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5.0}% {:>5.0}% {:>5.0}% {:>9}  {}",
            self.elapsed,
            self.published_rate,
            self.delivered_rate,
            self.slowest_rate,
            ms(self.p50_ms),
            ms(self.p99_ms),
            self.lag,
            mib(self.hub.rss),
            mib(self.hub.hwm),
            self.hub_cpu,
            self.load_cpu,
            self.machine_cpu,
            self.db_bytes.map_or("-".into(), mib),
            errors
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "elapsed_s": round(self.elapsed, 2),
            "published_total": self.published_total,
            "published_per_s": round(self.published_rate, 1),
            "delivered_per_s_all_followers": round(self.delivered_rate, 1),
            "delivered_per_s_slowest_follower": round(self.slowest_rate, 1),
            "slowest_follower_total": self.slowest_total,
            "batches": self.batches,
            "publish_p50_ms": self.p50_ms.map(|v| round(v, 3)),
            "publish_p99_ms": self.p99_ms.map(|v| round(v, 3)),
            "follower_lag": self.lag,
            "errors_total_by_code": self.errors,
            "hub_rss_bytes": self.hub.rss,
            "hub_hwm_bytes": self.hub.hwm,
            "hub_cpu_percent_of_one_core": round(self.hub_cpu, 1),
            "load_cpu_percent_of_one_core": round(self.load_cpu, 1),
            "machine_cpu_percent_of_one_core": round(self.machine_cpu, 1),
            "db_bytes": self.db_bytes,
        })
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.0}M", bytes as f64 / 1048576.0)
}

pub fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Quantile of sorted microseconds, in milliseconds.
fn quantile_ms(sorted: &[u32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0)
}

/// A follower's end state.
#[derive(Debug, Clone)]
pub struct FollowerReport {
    pub department: String,
    pub consumer: String,
    pub delivered: u64,
    pub position: u64,
    pub acknowledged: u64,
    pub ack_sent: u64,
    pub cursor: Option<u64>,
    pub gaps: u64,
    pub duplicates: u64,
    pub redelivered: u64,
    pub resubscribed: u64,
    pub bad_records: u64,
    pub problems: Vec<String>,
}

/// The phase's summary.
pub struct PhaseReport {
    pub config: PhaseConfig,
    pub dataset: String,
    pub rows: Vec<Row>,
    /// (elapsed seconds, VmRSS) about every second.
    pub rss_samples: Vec<(f64, u64)>,
    pub publish_seconds: f64,
    pub published: u64,
    pub batches: u64,
    pub replayed: u64,
    pub rejected: u64,
    pub last_sequence: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub acks: u64,
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
    pub max_lag: u64,
    pub lag_at_end: u64,
    pub drain_seconds: Option<f64>,
    pub errors: BTreeMap<String, u64>,
    pub error_samples: Vec<String>,
    pub followers: Vec<FollowerReport>,
    pub hub_end: Memory,
    pub db_bytes_at_start: Option<u64>,
    pub db_bytes_at_end: Option<u64>,
    pub interrupted: bool,
    pub hub_died: bool,
    /// Free bytes left when the phase was stopped for want of disk space.
    pub disk_full: Option<u64>,
    /// Remarks that do not fail the phase.
    pub notes: Vec<String>,
    /// Why the phase failed (errors, gaps, duplicates, misses…); empty when it passed.
    pub problems: Vec<String>,
    pub held: HeldReport,
}

/// A rate over the part of the phase after its first row (the warm-up).
pub struct Steady {
    pub published: f64,
    pub slowest: f64,
    pub from: f64,
    pub to: f64,
}

impl PhaseReport {
    pub fn publish_rate(&self) -> f64 {
        self.published as f64 / self.publish_seconds.max(1e-9)
    }

    /// Publish and slowest-follower rates between the first row and the last.
    pub fn steady(&self) -> Steady {
        let (first, last) = match (self.rows.first(), self.rows.last()) {
            (Some(f), Some(l)) if self.rows.len() >= 2 => (f.clone(), l.clone()),
            (_, Some(l)) => {
                return Steady {
                    published: l.published_total as f64 / l.elapsed.max(1e-9),
                    slowest: l.slowest_total as f64 / l.elapsed.max(1e-9),
                    from: 0.0,
                    to: l.elapsed,
                };
            }
            _ => {
                return Steady {
                    published: 0.0,
                    slowest: 0.0,
                    from: 0.0,
                    to: 0.0,
                };
            }
        };
        let dt = (last.elapsed - first.elapsed).max(1e-9);
        Steady {
            published: (last.published_total - first.published_total) as f64 / dt,
            slowest: last.slowest_total.saturating_sub(first.slowest_total) as f64 / dt,
            from: first.elapsed,
            to: last.elapsed,
        }
    }

    /// Resident memory: at 10 % of the run, at the end, the highest sample; and the slope of a
    /// least-squares line through the samples from 10 % on, in bytes per minute.
    pub fn memory_trend(&self) -> MemoryTrend {
        let samples: Vec<(f64, u64)> = self.rss_samples.iter().copied().filter(|s| s.1 > 0).collect();
        let duration = samples.last().map_or(0.0, |s| s.0);
        let at10 = samples
            .iter()
            .find(|s| s.0 >= duration * 0.1)
            .or(samples.first())
            .map_or(0, |s| s.1);
        let end = samples.last().map_or(0, |s| s.1);
        let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
        let tail: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.0 >= duration * 0.1)
            .map(|s| (s.0, s.1 as f64))
            .collect();
        let slope = if tail.len() >= 3 {
            let n = tail.len() as f64;
            let mx = tail.iter().map(|p| p.0).sum::<f64>() / n;
            let my = tail.iter().map(|p| p.1).sum::<f64>() / n;
            let sxy: f64 = tail.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
            let sxx: f64 = tail.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
            (sxx > 0.0).then(|| sxy / sxx * 60.0)
        } else {
            None
        };
        MemoryTrend {
            at10,
            end,
            max,
            hwm: self.hub_end.hwm.max(max),
            slope_per_minute: slope,
        }
    }

    pub fn json(&self) -> Value {
        let steady = self.steady();
        let m = self.memory_trend();
        json!({
            "name": self.config.name,
            "dataset": self.dataset,
            "settings": {
                "publishers": self.config.publishers,
                "followers": self.config.followers,
                "batch": self.config.batch,
                "in_flight_per_publisher": self.config.in_flight,
                "target_rate_per_s": self.config.rate.map(|r| round(r, 1)),
                "duration_s": self.config.duration.as_secs_f64(),
                "interval_s": self.config.interval.as_secs_f64(),
                "follow_page": self.config.follow_page,
                "ack_every_messages": self.config.ack_every,
                "publishers_wait_while_lag_above": self.config.max_lag,
                "record_bytes": records::TARGET_BYTES,
            },
            "rows": self.rows.iter().map(Row::json).collect::<Vec<_>>(),
            "rss_samples": self.rss_samples.iter().map(|(t, b)| json!([round(*t, 1), b])).collect::<Vec<_>>(),
            "summary": {
                "publish_seconds": round(self.publish_seconds, 2),
                "published_records": self.published,
                "published_per_s": round(self.publish_rate(), 1),
                "steady_published_per_s": round(steady.published, 1),
                "steady_slowest_follower_per_s": round(steady.slowest, 1),
                "steady_window_s": [round(steady.from, 1), round(steady.to, 1)],
                "batches": self.batches,
                "replayed_batches": self.replayed,
                "rejected_records": self.rejected,
                "dataset_last_sequence": self.last_sequence,
                "publish_p50_ms": self.p50_ms.map(|v| round(v, 3)),
                "publish_p99_ms": self.p99_ms.map(|v| round(v, 3)),
                "publish_max_ms": self.max_ms.map(|v| round(v, 3)),
                "acknowledge_calls": self.acks,
                "acknowledge_p50_ms": self.ack_p50_ms.map(|v| round(v, 3)),
                "acknowledge_p99_ms": self.ack_p99_ms.map(|v| round(v, 3)),
                "max_follower_lag": self.max_lag,
                "follower_lag_when_publishing_stopped": self.lag_at_end,
                "drain_seconds": self.drain_seconds.map(|v| round(v, 2)),
                "errors_by_code": self.errors,
                "error_samples": self.error_samples,
                "hub_rss_at_10_percent_bytes": m.at10,
                "hub_rss_at_end_bytes": m.end,
                "hub_rss_max_bytes": m.max,
                "hub_hwm_bytes": m.hwm,
                "hub_rss_slope_bytes_per_minute_after_10_percent": m.slope_per_minute.map(|v| v.round()),
                "db_bytes_at_start": self.db_bytes_at_start,
                "db_bytes_at_end": self.db_bytes_at_end,
                "interrupted": self.interrupted,
                "hub_died": self.hub_died,
                "stopped_for_disk_space_free_bytes": self.disk_full,
            },
            "followers": self.followers.iter().map(|f| json!({
                "department": f.department,
                "consumer": f.consumer,
                "delivered": f.delivered,
                "position": f.position,
                "acknowledged": f.acknowledged,
                "acknowledgement_sent_up_to": f.ack_sent,
                "cursor_on_hub": f.cursor,
                "gaps": f.gaps,
                "duplicates": f.duplicates,
                "redelivered_after_resubscribe": f.redelivered,
                "resubscribed": f.resubscribed,
                "bad_records": f.bad_records,
                "problems": f.problems,
            })).collect::<Vec<_>>(),
            "held_connections": (self.held.connections > 0).then(|| json!({
                "connections": self.held.connections,
                "opened_and_answered_seconds": round(self.held.opened_seconds, 2),
                "answered_at_start": self.held.answered_at_start,
                "answered_at_end": self.held.answered_at_end,
                "hub_rss_with_all_open_bytes": self.held.hub_rss_opened,
            })),
            "notes": self.notes,
            "passed": self.problems.is_empty(),
            "problems": self.problems,
        })
    }
}

pub struct MemoryTrend {
    pub at10: u64,
    pub end: u64,
    pub max: u64,
    pub hwm: u64,
    pub slope_per_minute: Option<f64>,
}

/// Sleeps until `at`, or less when the run is cancelled; false when cancelled.
async fn pause_until(at: Instant, cancel: &mut watch::Receiver<bool>) -> bool {
    if *cancel.borrow() {
        return false;
    }
    tokio::select! {
        () = sleep_until(at) => !*cancel.borrow(),
        _ = cancel.changed() => false,
    }
}

/// What is read about the hub while it runs.
pub struct Probe {
    pub hub_pid: u32,
    pub db: DbSize,
    /// Where the database lives, for the free-space guard.
    pub disk: Option<PathBuf>,
    /// A phase stops when fewer bytes than this are free there.
    pub min_free: u64,
}

/// Runs a phase against `target` on `dataset`.
pub async fn run_phase(
    config: PhaseConfig,
    target: &Target,
    dataset: String,
    probe: &Probe,
    cancel: watch::Receiver<bool>,
) -> Res<PhaseReport> {
    let (hub_pid, db) = (probe.hub_pid, &probe.db);
    let departments: Vec<&str> = pki::SAMPLE_DEPARTMENTS.iter().map(|d| d.code).collect();
    let shared = Arc::new(Shared {
        followers: (0..config.followers).map(|_| Follower::default()).collect(),
        ..Default::default()
    });
    // Every connection is made before the clock starts.
    let mut publisher_clients = Vec::new();
    for _ in 0..config.publishers {
        publisher_clients.push(target.exchange(PROVIDER).await?);
    }
    let mut follower_clients = Vec::new();
    for f in 0..config.followers {
        // Followers belong to the other sample departments in turn, then to the provider too.
        let department = departments[(f + 1) % departments.len()].to_string();
        let consumer = format!("load-{}-f{f}", config.name);
        follower_clients.push((target.exchange(&department).await?, department, consumer));
    }
    let mut held = HeldReport {
        connections: config.held_connections,
        ..HeldReport::default()
    };
    let held_channels = if config.held_connections > 0 {
        let opening = Instant::now();
        let (channels, answered) = open_held(target, config.held_connections, &shared).await?;
        held.opened_seconds = opening.elapsed().as_secs_f64();
        held.answered_at_start = answered;
        held.hub_rss_opened = hubproc::memory_of(hub_pid).rss;
        println!(
            "held {} connections open, {} answered, in {:.1}s; hub VmRSS {}",
            channels.len(),
            answered,
            held.opened_seconds,
            mib(held.hub_rss_opened)
        );
        channels
    } else {
        Vec::new()
    };
    let db_bytes_at_start = db.bytes().await;
    let (target_tx, target_rx) = watch::channel(None::<u64>);
    // The tasks stop when the run is interrupted, or here when the hub is gone.
    let (stop, stop_rx) = watch::channel(false);
    let stop = Arc::new(stop);
    let forward = tokio::spawn({
        let (mut outer, stop) = (cancel.clone(), stop.clone());
        async move {
            while outer.changed().await.is_ok() {
                if *outer.borrow() {
                    stop.send_replace(true);
                    return;
                }
            }
        }
    });
    let start = Instant::now();
    let deadline = start + config.duration;

    let mut followers = Vec::new();
    for (f, (client, _department, consumer)) in follower_clients.into_iter().enumerate() {
        followers.push(tokio::spawn(follow(
            f,
            client,
            dataset.clone(),
            consumer.clone(),
            config.clone(),
            shared.clone(),
            target_rx.clone(),
            stop_rx.clone(),
        )));
    }
    let mut publishers = Vec::new();
    let per_publisher = config.rate.map(|r| r / config.publishers as f64);
    for (p, client) in publisher_clients.into_iter().enumerate() {
        let bucket = per_publisher.map(|rate| {
            let capacity = (config.batch * config.in_flight) as f64;
            Arc::new(Mutex::new(Bucket::new(rate, capacity)))
        });
        let next = Arc::new(AtomicU64::new(0));
        for w in 0..config.in_flight {
            publishers.push(tokio::spawn(publish(
                p,
                w,
                client.clone(),
                dataset.clone(),
                config.clone(),
                shared.clone(),
                bucket.clone(),
                next.clone(),
                deadline,
                stop_rx.clone(),
            )));
        }
    }

    // The reporter, here: a row every interval, VmRSS every second.
    let mut rows: Vec<Row> = Vec::new();
    let mut rss_samples = Vec::new();
    let mut hub_died = false;
    let mut disk_full = None;
    let mut cancel_rx = stop_rx.clone();
    {
        let mut last_at = start;
        let mut last_published = 0u64;
        let mut last_delivered: Vec<u64> = vec![0; config.followers];
        let mut last_batches = 0u64;
        let mut last_hub_cpu = hubproc::cpu_seconds(&format!("/proc/{hub_pid}/stat"));
        let mut last_load_cpu = hubproc::cpu_seconds("/proc/self/stat");
        let mut last_machine_cpu = hubproc::machine_busy_seconds();
        let mut next_row = start + config.interval;
        let mut next_sample = start;
        loop {
            let wake = next_sample.min(next_row).min(deadline);
            let running = pause_until(wake, &mut cancel_rx).await;
            let now = Instant::now();
            let elapsed = now.duration_since(start).as_secs_f64();
            if now >= next_sample {
                let memory = hubproc::memory_of(hub_pid);
                rss_samples.push((elapsed, memory.rss));
                next_sample += Duration::from_secs(1);
                if !hubproc::alive(hub_pid) {
                    hub_died = true;
                }
            }
            let last_round = !running || now >= deadline || hub_died || disk_full.is_some();
            if now >= next_row || last_round {
                let dt = now.duration_since(last_at).as_secs_f64().max(1e-9);
                let published = shared.published.load(Ordering::Relaxed);
                let batches = shared.batches.load(Ordering::Relaxed);
                let delivered: Vec<u64> = shared
                    .followers
                    .iter()
                    .map(|f| f.delivered.load(Ordering::Relaxed))
                    .collect();
                let deltas: Vec<u64> = delivered
                    .iter()
                    .zip(&last_delivered)
                    .map(|(d, l)| d.saturating_sub(*l))
                    .collect();
                let mut lat = std::mem::take(&mut *shared.interval_latencies.lock().unwrap_or_else(|e| e.into_inner()));
                lat.sort_unstable();
                let hub_cpu = hubproc::cpu_seconds(&format!("/proc/{hub_pid}/stat"));
                let load_cpu = hubproc::cpu_seconds("/proc/self/stat");
                let machine_cpu = hubproc::machine_busy_seconds();
                let row = Row {
                    elapsed,
                    published_total: published,
                    published_rate: (published - last_published) as f64 / dt,
                    delivered_rate: deltas.iter().sum::<u64>() as f64 / dt,
                    slowest_rate: deltas.iter().copied().min().unwrap_or(0) as f64 / dt,
                    slowest_total: delivered.iter().copied().min().unwrap_or(0),
                    batches: batches - last_batches,
                    p50_ms: quantile_ms(&lat, 0.50),
                    p99_ms: quantile_ms(&lat, 0.99),
                    lag: shared.head.load(Ordering::Relaxed).saturating_sub(shared.slowest()),
                    errors: shared.errors(),
                    hub: hubproc::memory_of(hub_pid),
                    hub_cpu: (hub_cpu - last_hub_cpu).max(0.0) / dt * 100.0,
                    load_cpu: (load_cpu - last_load_cpu).max(0.0) / dt * 100.0,
                    machine_cpu: (machine_cpu - last_machine_cpu).max(0.0) / dt * 100.0,
                    db_bytes: db.bytes().await,
                };
                println!("{}", row.line());
                rows.push(row);
                if let Some(free) = probe.disk.as_deref().and_then(hubproc::free_bytes)
                    && free < probe.min_free
                {
                    disk_full = Some(free);
                    stop.send_replace(true);
                }
                last_at = now;
                last_published = published;
                last_delivered = delivered;
                last_batches = batches;
                last_hub_cpu = hub_cpu;
                last_load_cpu = load_cpu;
                last_machine_cpu = machine_cpu;
                while next_row <= now {
                    next_row += config.interval;
                }
            }
            if last_round {
                break;
            }
        }
    }
    let interrupted = *cancel.borrow();
    if hub_died {
        shared.error("hub", "HubExited", "the hub process is gone");
    }
    // Publishers stop at the deadline (a call in flight finishes, or times out and is retried until
    // CALL_TIMEOUT past it).
    if hub_died {
        stop.send_replace(true);
    }
    for p in publishers {
        if let Err(e) = p.await {
            shared.error("publisher", "TaskFailed", &e.to_string());
        }
    }
    let publish_seconds = start.elapsed().as_secs_f64();
    let lag_at_end = shared.head.load(Ordering::Relaxed).saturating_sub(shared.slowest());
    if !held_channels.is_empty() && !hub_died {
        held.answered_at_end = call_held(&held_channels, &shared).await;
    }

    // The dataset's last sequence is what every follower must reach.
    let mut provider = target.exchange(PROVIDER).await;
    let last_sequence = match &mut provider {
        Ok(client) if !hub_died => match client
            .get_dataset(pb::GetDatasetRequest {
                dataset: dataset.clone(),
            })
            .await
        {
            Ok(d) => Some(d.into_inner().last_sequence),
            Err(s) => {
                shared.status("GetDataset", &s);
                None
            }
        },
        Ok(_) => None,
        Err(e) => {
            shared.error("connect", "ConnectFailed", e);
            None
        }
    };
    let drain_started = Instant::now();
    let goal = last_sequence.unwrap_or_else(|| shared.head.load(Ordering::Relaxed));
    if !config.require_complete {
        stop.send_replace(true);
    }
    let _ = target_tx.send(Some(goal));
    let drain_deadline = drain_started + config.drain_timeout;
    let mut all_reached = true;
    for f in &mut followers {
        match tokio::time::timeout_at(drain_deadline, &mut *f).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => shared.error("follower", "TaskFailed", &e.to_string()),
            Err(_) => all_reached = false,
        }
    }
    // Those that did not reach the goal in time stop here (the check below reports them).
    for f in &followers {
        f.abort();
    }
    let all_reached = all_reached
        && shared
            .followers
            .iter()
            .all(|f| f.position.load(Ordering::Relaxed) >= goal);
    let drain_seconds = all_reached.then(|| drain_started.elapsed().as_secs_f64());
    forward.abort();

    // The cursors the hub kept for each consumer.
    let mut reports = Vec::new();
    for (f, stats) in shared.followers.iter().enumerate() {
        let department = departments[(f + 1) % departments.len()].to_string();
        let consumer = format!("load-{}-f{f}", config.name);
        let mut cursor = None;
        if !hub_died && let Ok(mut client) = target.exchange(&department).await {
            match client
                .get_consumer(pb::GetConsumerRequest {
                    dataset: dataset.clone(),
                    consumer: consumer.clone(),
                })
                .await
            {
                Ok(c) => cursor = Some(c.into_inner().acknowledged_sequence),
                Err(s) => shared.status("GetConsumer", &s),
            }
        }
        reports.push(FollowerReport {
            department,
            consumer,
            delivered: stats.delivered.load(Ordering::Relaxed),
            position: stats.position.load(Ordering::Relaxed),
            acknowledged: stats.acknowledged.load(Ordering::Relaxed),
            ack_sent: stats.ack_sent.load(Ordering::Relaxed),
            cursor,
            gaps: stats.gaps.load(Ordering::Relaxed),
            duplicates: stats.duplicates.load(Ordering::Relaxed),
            redelivered: stats.redelivered.load(Ordering::Relaxed),
            resubscribed: stats.resubscribed.load(Ordering::Relaxed),
            bad_records: stats.bad_records.load(Ordering::Relaxed),
            problems: stats.problems.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        });
    }

    let mut all = std::mem::take(&mut *shared.latencies.lock().unwrap_or_else(|e| e.into_inner()));
    all.sort_unstable();
    let published = shared.published.load(Ordering::Relaxed);
    let mut acks = std::mem::take(&mut *shared.ack_latencies.lock().unwrap_or_else(|e| e.into_inner()));
    acks.sort_unstable();
    let errors = shared.errors();
    let error_samples = shared.error_samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let db_bytes_at_end = db.bytes().await;
    let mut report = PhaseReport {
        dataset,
        rows,
        rss_samples,
        publish_seconds,
        published,
        batches: shared.batches.load(Ordering::Relaxed),
        replayed: shared.replayed.load(Ordering::Relaxed),
        rejected: shared.rejected.load(Ordering::Relaxed),
        last_sequence: goal,
        p50_ms: quantile_ms(&all, 0.50),
        p99_ms: quantile_ms(&all, 0.99),
        max_ms: all.last().map(|v| f64::from(*v) / 1000.0),
        acks: acks.len() as u64,
        ack_p50_ms: quantile_ms(&acks, 0.50),
        ack_p99_ms: quantile_ms(&acks, 0.99),
        max_lag: 0,
        lag_at_end,
        drain_seconds,
        errors: errors.clone(),
        error_samples,
        followers: reports,
        hub_end: hubproc::memory_of(hub_pid),
        db_bytes_at_start,
        db_bytes_at_end,
        interrupted,
        hub_died,
        disk_full,
        notes: Vec::new(),
        problems: Vec::new(),
        held,
        config,
    };
    drop(held_channels);
    report.max_lag = report.rows.iter().map(|r| r.lag).max().unwrap_or(0);
    report.problems = judge(&report, last_sequence);
    Ok(report)
}

/// Everything that makes the phase fail.
fn judge(r: &PhaseReport, last_sequence: Option<u64>) -> Vec<String> {
    let mut problems = Vec::new();
    if r.interrupted {
        problems.push("interrupted before the end".into());
    }
    if r.hub_died {
        problems.push("the hub process exited during the run".into());
    }
    if let Some(free) = r.disk_full {
        problems.push(format!(
            "stopped early: only {:.1} GiB free where the database is",
            free as f64 / 1073741824.0
        ));
    }
    let errors: u64 = r.errors.values().sum();
    if errors > 0 {
        problems.push(format!(
            "{errors} errors: {}",
            r.errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if r.rejected > 0 {
        problems.push(format!("{} records rejected by the hub", r.rejected));
    }
    let held = &r.held;
    if held.connections > 0
        && !r.hub_died
        && (held.answered_at_start < held.connections || held.answered_at_end < held.connections)
    {
        problems.push(format!(
            "of {} held connections, {} answered when opened and {} at the end",
            held.connections, held.answered_at_start, held.answered_at_end
        ));
    }
    if let Some(last) = last_sequence
        && last != r.published
    {
        problems.push(format!(
            "the dataset's last sequence is {last} but {} records were acknowledged to the publishers",
            r.published
        ));
    }
    if r.published == 0 && !r.interrupted {
        problems.push("nothing was published".into());
    }
    for f in &r.followers {
        let who = format!("follower {} ({})", f.consumer, f.department);
        if f.gaps > 0 {
            problems.push(format!("{who}: {} gaps in the sequence", f.gaps));
        }
        if f.duplicates > 0 {
            problems.push(format!("{who}: {} sequences delivered twice", f.duplicates));
        }
        if f.bad_records > 0 {
            problems.push(format!("{who}: {} records not as published", f.bad_records));
        }
        if !r.config.require_complete {
            // The peak: followers stop with the publishers; what they got was checked above.
        } else if f.position != r.last_sequence {
            problems.push(format!(
                "{who}: reached sequence {} of {} (missed {})",
                f.position,
                r.last_sequence,
                r.last_sequence.saturating_sub(f.position)
            ));
        } else if f.delivered != r.last_sequence {
            problems.push(format!(
                "{who}: {} changes received for sequences 1..={}",
                f.delivered, r.last_sequence
            ));
        }
        if let Some(cursor) = f.cursor
            && !(f.acknowledged..=f.ack_sent.max(f.acknowledged)).contains(&cursor)
        {
            problems.push(format!(
                "{who}: the hub keeps its cursor at {cursor}, acknowledged {}",
                f.acknowledged
            ));
        }
        for p in &f.problems {
            problems.push(format!("{who}: {p}"));
        }
    }
    problems
}

/// The batch numbered `b` of publisher `p` of `publishers`.
fn batch_request(
    dataset: &str,
    phase: &str,
    (p, publishers): (usize, usize),
    b: u64,
    batch: usize,
) -> pb::PublishRequest {
    let stride = KEY_SPACE / publishers.max(1) as u64;
    let first = p as u64 * stride + (b * batch as u64) % stride;
    pb::PublishRequest {
        dataset: dataset.to_string(),
        idempotency_key: format!("load-{phase}-p{p}-b{b}"),
        changes: (first..first + batch as u64)
            .map(|i| pb::RecordChange {
                change: Some(pb::record_change::Change::Upsert(records::record(i).into_bytes())),
            })
            .collect(),
        policy: pb::BatchPolicy::RejectAll as i32,
        lenient: false,
    }
}

/// One of a publisher's `in_flight` workers: takes the publisher's next batch, waits for the
/// bucket, publishes it (retrying with the same idempotency key after an error), until the
/// deadline.
#[allow(clippy::too_many_arguments)]
async fn publish(
    p: usize,
    _worker: usize,
    mut client: Exchange,
    dataset: String,
    config: PhaseConfig,
    shared: Arc<Shared>,
    bucket: Option<Arc<Mutex<Bucket>>>,
    next: Arc<AtomicU64>,
    deadline: Instant,
    mut cancel: watch::Receiver<bool>,
) {
    loop {
        if Instant::now() >= deadline || *cancel.borrow() {
            return;
        }
        if let Some(max) = config.max_lag
            && !shared.followers.is_empty()
        {
            while shared.head.load(Ordering::Relaxed).saturating_sub(shared.slowest()) > max {
                if Instant::now() >= deadline
                    || !pause_until(Instant::now() + Duration::from_millis(2), &mut cancel).await
                {
                    return;
                }
            }
        }
        if let Some(bucket) = &bucket {
            let at = bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reserve(config.batch as f64);
            if at >= deadline || !pause_until(at, &mut cancel).await {
                return;
            }
        }
        let b = next.fetch_add(1, Ordering::Relaxed);
        let request = batch_request(&dataset, &config.name, (p, config.publishers), b, config.batch);
        loop {
            let started = std::time::Instant::now();
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(CALL_TIMEOUT);
            let answer = tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(1), client.publish(call)).await;
            let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            match answer {
                Ok(Ok(answer)) => {
                    let answer = answer.into_inner();
                    shared
                        .interval_latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(micros);
                    shared.latencies.lock().unwrap_or_else(|e| e.into_inner()).push(micros);
                    if !answer.rejected.is_empty() {
                        shared
                            .rejected
                            .fetch_add(answer.rejected.len() as u64, Ordering::Relaxed);
                        let first = &answer.rejected[0];
                        shared.error(
                            "Publish",
                            "Rejected",
                            &format!(
                                "{} records of {} rejected, e.g. #{}: {:?}",
                                answer.rejected.len(),
                                answer.idempotency_key,
                                first.index,
                                first.errors.first().map(|e| (&e.instance_pointer, &e.message))
                            ),
                        );
                    }
                    if answer.replayed {
                        shared.replayed.fetch_add(1, Ordering::Relaxed);
                    }
                    shared
                        .published
                        .fetch_add(u64::from(answer.accepted), Ordering::Relaxed);
                    shared.batches.fetch_add(1, Ordering::Relaxed);
                    shared.head.fetch_max(answer.last_sequence, Ordering::Relaxed);
                    break;
                }
                Ok(Err(status)) => shared.status("Publish", &status),
                Err(_) => shared.error("Publish", "ClientTimeout", "no answer within the call timeout"),
            }
            // Retry the same batch (same idempotency key) until it is in or the run is over; a
            // batch given up after an error may have been committed: the sequence check says.
            if Instant::now() >= deadline + CALL_TIMEOUT
                || !pause_until(Instant::now() + RETRY_PAUSE, &mut cancel).await
            {
                return;
            }
        }
    }
}

/// A follower: Subscribe as a named consumer, check that the sequence goes up by one each time,
/// acknowledge every `ack_every` messages, resubscribe from the cursor after an error; ends when
/// it has reached the goal the phase sets once publishing stopped.
#[allow(clippy::too_many_arguments)]
async fn follow(
    f: usize,
    mut client: Exchange,
    dataset: String,
    consumer: String,
    config: PhaseConfig,
    shared: Arc<Shared>,
    mut goal: watch::Receiver<Option<u64>>,
    mut cancel: watch::Receiver<bool>,
) {
    let me = &shared.followers[f];
    let mut position = 0u64;
    let mut acknowledged = 0u64;
    let mut first = true;
    // After a resubscription the hub starts again from the acknowledged position: what comes at
    // or below `position` then is redelivery, not duplication.
    let mut redelivery_until = 0u64;
    let reached = |position: u64, goal: &watch::Receiver<Option<u64>>| goal.borrow().is_some_and(|g| position >= g);
    'subscribe: loop {
        if *cancel.borrow() {
            return;
        }
        if !first {
            me.resubscribed.fetch_add(1, Ordering::Relaxed);
            redelivery_until = position;
        }
        first = false;
        let mut stream = match client
            .subscribe(pb::SubscribeRequest {
                dataset: dataset.clone(),
                after_sequence: 0,
                consumer: consumer.clone(),
                max_batch: config.follow_page,
                purpose: PURPOSE.into(),
                grant_id: String::new(),
            })
            .await
        {
            Ok(s) => s.into_inner(),
            Err(s) => {
                shared.status("Subscribe", &s);
                if !pause_until(Instant::now() + RETRY_PAUSE, &mut cancel).await {
                    return;
                }
                continue 'subscribe;
            }
        };
        let mut messages = 0u32;
        loop {
            if reached(position, &goal) {
                break 'subscribe;
            }
            let message = tokio::select! {
                m = stream.message() => m,
                changed = goal.changed() => if changed.is_ok() { continue } else { return },
                _ = cancel.changed() => return,
            };
            match message {
                Ok(Some(batch)) => {
                    let mut count = 0u64;
                    for c in batch.changes {
                        if c.sequence == position + 1 {
                            position = c.sequence;
                            count += 1;
                        } else if c.sequence <= position {
                            if c.sequence <= redelivery_until {
                                me.redelivered.fetch_add(1, Ordering::Relaxed);
                            } else {
                                me.duplicates.fetch_add(1, Ordering::Relaxed);
                                me.problem(format!("sequence {} again after {position}", c.sequence));
                            }
                            continue;
                        } else {
                            me.gaps.fetch_add(1, Ordering::Relaxed);
                            me.problem(format!("sequence {} after {position}", c.sequence));
                            position = c.sequence;
                            count += 1;
                        }
                        if c.record.len() != records::TARGET_BYTES {
                            me.bad_records.fetch_add(1, Ordering::Relaxed);
                            me.problem(format!("record {} of {} bytes", c.sequence, c.record.len()));
                        }
                    }
                    me.delivered.fetch_add(count, Ordering::Relaxed);
                    me.position.store(position, Ordering::Relaxed);
                    messages += 1;
                    if messages.is_multiple_of(config.ack_every.max(1)) && position > acknowledged {
                        acknowledge(
                            &mut client,
                            &dataset,
                            &consumer,
                            position,
                            &shared,
                            me,
                            &mut acknowledged,
                        )
                        .await;
                    }
                }
                Ok(None) => {
                    shared.error("Subscribe", "StreamEnded", "the hub ended the stream");
                    if !pause_until(Instant::now() + RETRY_PAUSE, &mut cancel).await {
                        return;
                    }
                    continue 'subscribe;
                }
                Err(s) => {
                    shared.status("Subscribe", &s);
                    if !pause_until(Instant::now() + RETRY_PAUSE, &mut cancel).await {
                        return;
                    }
                    continue 'subscribe;
                }
            }
        }
    }
    if position > acknowledged {
        acknowledge(
            &mut client,
            &dataset,
            &consumer,
            position,
            &shared,
            me,
            &mut acknowledged,
        )
        .await;
    }
}

async fn acknowledge(
    client: &mut Exchange,
    dataset: &str,
    consumer: &str,
    position: u64,
    shared: &Shared,
    me: &Follower,
    acknowledged: &mut u64,
) {
    let mut call = tonic::Request::new(pb::AcknowledgeRequest {
        dataset: dataset.into(),
        consumer: consumer.into(),
        sequence: position,
    });
    call.set_timeout(CALL_TIMEOUT);
    me.ack_sent.fetch_max(position, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let answer = client.acknowledge(call).await;
    let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    shared
        .ack_latencies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(micros);
    match answer {
        Ok(_) => {
            *acknowledged = position;
            me.acknowledged.store(position, Ordering::Relaxed);
        }
        Err(s) => shared.status("Acknowledge", &s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_paces_batches_at_the_rate() {
        let mut b = Bucket::new(1000.0, 100.0);
        let t0 = Instant::now();
        // The first batch is covered by the initial tokens; the next ten wait 0.1 s each.
        assert!(b.reserve(100.0) <= t0 + Duration::from_millis(5));
        let mut last = t0;
        for _ in 0..10 {
            last = b.reserve(100.0);
        }
        let waited = last.duration_since(t0).as_secs_f64();
        assert!((0.95..1.05).contains(&waited), "{waited}");
    }

    #[test]
    fn batches_of_different_publishers_have_different_keys() {
        let a = batch_request("d", "load", (0, 2), 0, 3);
        let b = batch_request("d", "load", (1, 2), 0, 3);
        assert_ne!(a.idempotency_key, b.idempotency_key);
        let uscc = |r: &pb::PublishRequest| match &r.changes[0].change {
            Some(pb::record_change::Change::Upsert(bytes)) => {
                serde_json::from_slice::<Value>(bytes).expect("json")["uscc"].clone()
            }
            _ => Value::Null,
        };
        assert_ne!(uscc(&a), uscc(&b));
        assert_eq!(a.changes.len(), 3);
    }

    #[test]
    fn quantiles_and_trend() {
        assert_eq!(quantile_ms(&[], 0.5), None);
        assert_eq!(quantile_ms(&[1000, 2000, 3000], 0.5), Some(2.0));
    }
}
