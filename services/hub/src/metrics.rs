//! Prometheus metrics of one hub, and the plain-HTTP endpoint that serves them (`GET /metrics`,
//! text exposition format 0.0.4).
//!
//! Each hub has its own [`Metrics`] (not a process-wide registry): the integration tests run many
//! hubs in one process, and each hub's `/metrics` shows only its own numbers. The format is a few
//! lines of text, so it is written here rather than pulled in with a metrics crate.
//!
//! What is measured, and by whom:
//! - [`MetricsLayer`], around the gRPC router: `xinqiao_rpc_requests_total{method,code}` and
//!   `xinqiao_rpc_duration_seconds{method}`. `method` is the RPC's name (`WhoAmI`; health checks
//!   and reflection under theirs: `Check`, `Watch`, `ServerReflectionInfo`), or `unknown` for a
//!   path the hub does not serve, so that callers cannot invent label values. `code` is the
//!   `grpc-status` of a call that ended before any message (trailers-only), else `OK`; a call the
//!   client abandoned before the hub answered counts as `CANCELLED`. The duration runs to the
//!   response headers: for a unary call that is the whole call, for a stream the time until it
//!   started (how a stream ends is in the audit trail, not here).
//! - the exchange handlers: records published and delivered, validation failures, and the lag
//!   of live subscriptions ([`Metrics::subscription`]);
//! - the scrape itself: the audit chain's length, read from the store when it is scraped;
//! - the scorecard engine: [`Metrics::set_scorecard`].
//!
//! Dataset ids and department codes are labels: both are bounded by the catalogue.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tonic::Code;
use tonic::codegen::http;
use xinqiao_store::{AuditFilter, Store};

use crate::audit::code_name;
use crate::nodes::Readiness;

/// Upper bounds of the RPC latency buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The `method` label of a path that names no RPC the hub serves.
const UNKNOWN_METHOD: &str = "unknown";
/// The Content-Type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A scrape does not wait longer than this for the store; it shows the last known chain length.
const STORE_WAIT: Duration = Duration::from_secs(2);
/// A request head larger than this is refused (a scraper sends a few hundred bytes).
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Everything about one connection (reading the request, the scrape, the answer) ends by then.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// After answering, how long and how much of what the client still sends is read and dropped.
const LINGER: Duration = Duration::from_secs(2);
const MAX_LINGER_BYTES: usize = 256 * 1024;
/// Connections answered at once; more are closed at once rather than queued.
const MAX_CONNECTIONS: usize = 32;

/// The metrics of one hub. Cheap to clone; clones share the numbers.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    rpcs: Mutex<BTreeMap<&'static str, RpcStats>>,
    datasets: Mutex<BTreeMap<String, DatasetStats>>,
    scorecard: Mutex<BTreeMap<(String, String), f64>>,
    /// Interface calls, by interface and operation: outcomes and the time the upstream took.
    interfaces: Mutex<BTreeMap<(String, String), RpcStats>>,
    audit_chain: AtomicU64,
    /// Where the audit chain's length is read at scrape time.
    audit_source: OnceLock<Arc<dyn Store>>,
    next_subscription: AtomicU64,
}

#[derive(Default)]
struct RpcStats {
    /// Calls by status code (the index is the code's number, 0 to 16).
    codes: [u64; 17],
    duration: Histogram,
}

#[derive(Default)]
struct Histogram {
    /// Observations per bucket, not cumulative; the last counts those above every bound.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
    }
}

#[derive(Default)]
struct DatasetStats {
    published: u64,
    delivered: u64,
    validation_failures: u64,
    /// The lag of each live subscription, by the id of its [`SubscriptionLag`].
    lags: BTreeMap<u64, u64>,
}

/// A family with one series per dataset.
struct DatasetFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&DatasetStats) -> u64,
}

const DATASET_FAMILIES: [DatasetFamily; 5] = [
    DatasetFamily {
        name: "xinqiao_records_published_total",
        kind: "counter",
        help: "Records committed to a dataset (upserts and deletes).",
        value: |d| d.published,
    },
    DatasetFamily {
        name: "xinqiao_records_delivered_total",
        kind: "counter",
        help: "Records sent to consumers of a dataset (Fetch, Snapshot, Subscribe).",
        value: |d| d.delivered,
    },
    DatasetFamily {
        name: "xinqiao_validation_failures_total",
        kind: "counter",
        help: "Published records of a dataset rejected by validation.",
        value: |d| d.validation_failures,
    },
    DatasetFamily {
        name: "xinqiao_subscription_lag",
        kind: "gauge",
        help: "Changes the furthest-behind live subscription of a dataset has yet to receive (0: none behind).",
        value: |d| d.lags.values().copied().max().unwrap_or(0),
    },
    DatasetFamily {
        name: "xinqiao_subscriptions",
        kind: "gauge",
        help: "Live subscriptions to a dataset.",
        value: |d| d.lags.len() as u64,
    },
];

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic while counting; the numbers are still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Reads the audit chain's length from `store` at each scrape (see [`Metrics::scrape`]).
    /// Only the first store given is used.
    pub fn track_audit_chain(&self, store: Arc<dyn Store>) {
        let _ = self.inner.audit_source.set(store);
    }

    fn record_rpc(&self, method: &'static str, code: Code, elapsed: Duration) {
        let mut rpcs = lock(&self.inner.rpcs);
        let stats = rpcs.entry(method).or_default();
        // `Code` is a fieldless enum numbered 0 to 16.
        if let Some(count) = stats.codes.get_mut(code as usize) {
            *count += 1;
        }
        stats.duration.observe(elapsed.as_secs_f64());
    }

    fn dataset(&self, dataset: &str, f: impl FnOnce(&mut DatasetStats)) {
        let mut datasets = lock(&self.inner.datasets);
        match datasets.get_mut(dataset) {
            Some(stats) => f(stats),
            None => f(datasets.entry(dataset.to_string()).or_default()),
        }
    }

    /// One Invoke of an interface's operation answered with `code`; `upstream` is how long the
    /// upstream took (None when the call never reached it).
    pub fn interface_call(&self, interface: &str, operation: &str, code: Code, upstream: Option<Duration>) {
        let mut interfaces = lock(&self.inner.interfaces);
        let stats = interfaces
            .entry((interface.to_string(), operation.to_string()))
            .or_default();
        if let Some(count) = stats.codes.get_mut(code as usize) {
            *count += 1;
        }
        if let Some(elapsed) = upstream {
            stats.duration.observe(elapsed.as_secs_f64());
        }
    }

    /// `n` records of `dataset` were committed (accepted upserts and deletes).
    pub fn records_published(&self, dataset: &str, n: u64) {
        self.dataset(dataset, |d| d.published += n);
    }

    /// `n` records of `dataset` were sent to a consumer (Fetch, Snapshot, Subscribe).
    pub fn records_delivered(&self, dataset: &str, n: u64) {
        self.dataset(dataset, |d| d.delivered += n);
    }

    /// `n` records published to `dataset` were rejected by validation.
    pub fn validation_failures(&self, dataset: &str, n: u64) {
        self.dataset(dataset, |d| d.validation_failures += n);
    }

    /// Registers a live subscription to `dataset`, with lag 0. Its lag counts until the returned
    /// handle is dropped, which the subscription's task does however it ends: a stream that is
    /// gone cannot leave a stale lag behind.
    pub fn subscription(&self, dataset: &str) -> SubscriptionLag {
        let id = self.inner.next_subscription.fetch_add(1, Ordering::Relaxed);
        self.dataset(dataset, |d| {
            d.lags.insert(id, 0);
        });
        SubscriptionLag {
            metrics: self.clone(),
            dataset: dataset.to_string(),
            id,
        }
    }

    /// The audit chain has at least `n` events (pruned ones included). The chain only grows, so
    /// a smaller number than one already known is ignored.
    pub fn audit_chain_length(&self, n: u64) {
        self.inner.audit_chain.fetch_max(n, Ordering::Relaxed);
    }

    /// Sets a scorecard indicator of a department (`xinqiao_scorecard{department,indicator}`).
    pub fn set_scorecard(&self, department: &str, indicator: &str, value: f64) {
        lock(&self.inner.scorecard).insert((department.to_string(), indicator.to_string()), value);
    }

    /// The text to answer a scrape with, after reading the audit chain's length from the store
    /// (when [`Metrics::track_audit_chain`] named one). A store that does not answer in time
    /// leaves the last known length.
    pub async fn scrape(&self) -> String {
        if let Some(store) = self.inner.audit_source.get() {
            let known = self.inner.audit_chain.load(Ordering::Relaxed);
            match tokio::time::timeout(STORE_WAIT, audit_head(store.as_ref(), known)).await {
                Ok(Ok(head)) => self.audit_chain_length(head),
                Ok(Err(error)) => tracing::warn!(%error, "metrics: cannot read the audit chain's length"),
                Err(_) => tracing::warn!("metrics: the store did not say the audit chain's length in time"),
            }
        }
        self.render()
    }

    /// Everything in the text exposition format, families in a fixed order and series sorted.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) -> std::fmt::Result {
        {
            let rpcs = lock(&self.inner.rpcs);
            family(
                out,
                "xinqiao_rpc_requests_total",
                "counter",
                "gRPC calls answered, by method and status code.",
            )?;
            for (method, stats) in rpcs.iter() {
                for (code, count) in stats.codes.iter().enumerate().filter(|(_, count)| **count > 0) {
                    let code = code_name(Code::from_i32(code as i32));
                    sample(
                        out,
                        "xinqiao_rpc_requests_total",
                        &[("method", method), ("code", code)],
                        *count,
                    )?;
                }
            }
            family(
                out,
                "xinqiao_rpc_duration_seconds",
                "histogram",
                "Time to answer a gRPC call (for a stream: until it started), by method.",
            )?;
            for (method, stats) in rpcs.iter() {
                histogram(
                    out,
                    "xinqiao_rpc_duration_seconds",
                    &[("method", method)],
                    &stats.duration,
                )?;
            }
        }
        {
            let datasets = lock(&self.inner.datasets);
            for f in DATASET_FAMILIES {
                family(out, f.name, f.kind, f.help)?;
                for (dataset, stats) in datasets.iter() {
                    sample(out, f.name, &[("dataset", dataset)], (f.value)(stats))?;
                }
            }
        }
        {
            let interfaces = lock(&self.inner.interfaces);
            family(
                out,
                "xinqiao_interface_calls_total",
                "counter",
                "Interface calls (Invoke) answered, by interface, operation and status code.",
            )?;
            for ((interface, operation), stats) in interfaces.iter() {
                for (code, count) in stats.codes.iter().enumerate().filter(|(_, count)| **count > 0) {
                    let code = code_name(Code::from_i32(code as i32));
                    sample(
                        out,
                        "xinqiao_interface_calls_total",
                        &[("interface", interface), ("operation", operation), ("code", code)],
                        *count,
                    )?;
                }
            }
            family(
                out,
                "xinqiao_interface_upstream_seconds",
                "histogram",
                "Time an interface's upstream took to answer, by interface and operation.",
            )?;
            for ((interface, operation), stats) in interfaces.iter() {
                histogram(
                    out,
                    "xinqiao_interface_upstream_seconds",
                    &[("interface", interface), ("operation", operation)],
                    &stats.duration,
                )?;
            }
        }
        family(
            out,
            "xinqiao_audit_chain_length",
            "gauge",
            "Events in the audit chain since its genesis, pruned ones included (the head's sequence).",
        )?;
        sample(
            out,
            "xinqiao_audit_chain_length",
            &[],
            self.inner.audit_chain.load(Ordering::Relaxed),
        )?;
        let scorecard = lock(&self.inner.scorecard);
        family(
            out,
            "xinqiao_scorecard",
            "gauge",
            "Scorecard indicators, by department.",
        )?;
        for ((department, indicator), value) in scorecard.iter() {
            sample(
                out,
                "xinqiao_scorecard",
                &[("department", department), ("indicator", indicator)],
                number(*value),
            )?;
        }
        Ok(())
    }
}

/// The lag of one live subscription; dropping it removes the subscription from the gauges.
pub struct SubscriptionLag {
    metrics: Metrics,
    dataset: String,
    id: u64,
}

impl SubscriptionLag {
    /// The subscription is `lag` changes behind the dataset's head.
    pub fn set(&self, lag: u64) {
        self.metrics.dataset(&self.dataset, |d| {
            d.lags.insert(self.id, lag);
        });
    }
}

impl Drop for SubscriptionLag {
    fn drop(&mut self) {
        self.metrics.dataset(&self.dataset, |d| {
            d.lags.remove(&self.id);
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The text exposition format

fn family(out: &mut String, name: &str, kind: &str, help: &str) -> std::fmt::Result {
    writeln!(out, "# HELP {name} {}", escape_help(help))?;
    writeln!(out, "# TYPE {name} {kind}")
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) -> std::fmt::Result {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write!(out, "{label}=\"{}\"", escape_label(value))?;
        }
        out.push('}');
    }
    writeln!(out, " {value}")
}

fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], h: &Histogram) -> std::fmt::Result {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0;
    for (i, count) in h.counts.iter().enumerate() {
        cumulative += count;
        let le = BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_string(), |bound| number(*bound));
        let mut with_le = labels.to_vec();
        with_le.push(("le", &le));
        sample(out, &bucket, &with_le, cumulative)?;
    }
    sample(out, &format!("{name}_sum"), labels, number(h.sum))?;
    sample(out, &format!("{name}_count"), labels, cumulative)
}

/// A label value as the format writes it: backslash, double quote and line feed escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A HELP text as the format writes it: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A float as the format writes it (Go's spelling of the infinities and NaN).
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        value.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// The audit chain's length

/// The highest sequence in the audit chain, at least `known` (the chain only grows).
async fn audit_head(store: &dyn Store, known: u64) -> xinqiao_domain::Result<u64> {
    // After pruning everything, the head is the checkpoint.
    let floor = known.max(store.audit_checkpoint().await?.sequence);
    let everything = AuditFilter::default();
    find_head(floor, |after| {
        let everything = &everything;
        async move {
            let page = store.list_audit(everything, after, 1).await?;
            Ok(page.first().map(|e| e.event.sequence))
        }
    })
    .await
}

/// The highest sequence there is, at least `floor`, where `first_after(x)` names the lowest one
/// above `x`, if any. A handful of one-row lookups, not a scan: the step doubles from `floor`
/// until nothing lies beyond, then halves back; when nothing was added since the last scrape it
/// is a single lookup.
async fn find_head<F, Fut>(floor: u64, mut first_after: F) -> xinqiao_domain::Result<u64>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = xinqiao_domain::Result<Option<u64>>>,
{
    // The stores keep sequences as signed 64-bit numbers.
    const MAX: u64 = i64::MAX as u64;
    // The head is always at least `low` and at most `high` once that is known.
    let mut low = floor.min(MAX);
    let mut step = 1u64;
    let mut high = loop {
        let probe = low.saturating_add(step - 1).min(MAX);
        match first_after(probe).await? {
            None => break probe,
            Some(_) if probe == MAX => return Ok(MAX),
            Some(found) => {
                low = low.max(found);
                step = step.saturating_mul(2);
            }
        }
    };
    while low < high {
        let middle = low + (high - low) / 2;
        match first_after(middle).await? {
            None => high = middle,
            Some(found) => low = found.max(middle + 1),
        }
    }
    Ok(low)
}

// ---------------------------------------------------------------------------------------------
// The RPC layer

/// Every RPC path the hub serves, with the method name it is counted under.
fn known_methods() -> &'static HashMap<String, String> {
    static KNOWN: OnceLock<HashMap<String, String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known = HashMap::new();
        let sets = [
            xinqiao_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        for set in sets {
            // The sets are compiled in and tested below; one that did not decode would only
            // leave its methods counted as unknown.
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        let path = match file.package() {
                            "" => format!("/{}/{}", service.name(), method.name()),
                            package => format!("/{package}.{}/{}", service.name(), method.name()),
                        };
                        known.insert(path, method.name().to_string());
                    }
                }
            }
        }
        known
    })
}

/// The method label of a request path: the RPC's name, or `unknown`.
fn method_of(path: &str) -> &'static str {
    known_methods().get(path).map_or(UNKNOWN_METHOD, String::as_str)
}

/// The status of a response: the `grpc-status` header of a trailers-only answer, else OK.
fn status_of(headers: &http::HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(Code::Unknown, Code::from_i32)
        })
        .unwrap_or(Code::Ok)
}

/// The tower layer that counts and times every gRPC call (see the module comment).
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl MetricsLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Metrics,
}

/// One call being timed; recorded as CANCELLED if dropped before it was answered (the client
/// went away and the server dropped the call's future).
struct Timing {
    metrics: Metrics,
    method: &'static str,
    started: Instant,
    answered: bool,
}

impl Timing {
    fn answered(mut self, code: Code) {
        self.answered = true;
        self.metrics.record_rpc(self.method, code, self.started.elapsed());
    }
}

impl Drop for Timing {
    fn drop(&mut self) {
        if !self.answered {
            self.metrics
                .record_rpc(self.method, Code::Cancelled, self.started.elapsed());
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Metered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let timing = Timing {
            metrics: self.metrics.clone(),
            method: method_of(request.uri().path()),
            started: Instant::now(),
            answered: false,
        };
        let answer = inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            let code = match &result {
                Ok(response) => status_of(response.headers()),
                // The router's errors never reach a client as a gRPC status of their own.
                Err(_) => Code::Unknown,
            };
            timing.answered(code);
            result
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP endpoint

/// Serves `GET /metrics`, and the probes `GET /healthz` (the process answers: liveness) and
/// `GET /readyz` (the hub takes traffic: readiness, 503 with the reason otherwise), over plain
/// HTTP on `addr` (port 0 picks a free one) until `stopping` turns true or its sender is gone;
/// the address it listens on.
///
/// Plain HTTP because scrapers expect it and the numbers carry no records; bind it to an address
/// only the monitoring network reaches. Each connection gets one answer and is closed.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    readiness: Readiness,
    mut stopping: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        // A dropped sender (the hub failed to start, or is gone) stops the endpoint too.
        let stopped = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        // Too many at once: this one is closed unanswered (dropped).
                        let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
                        let metrics = metrics.clone();
                        let readiness = readiness.clone();
                        tokio::spawn(async move {
                            let _permit = permit;
                            if let Ok(Err(error)) = tokio::time::timeout(CONNECTION_DEADLINE, answer(stream, &metrics, &readiness)).await {
                                tracing::debug!(%error, "metrics: connection failed");
                            }
                        });
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(%error, "metrics: cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = &mut stopped => break,
            }
        }
        tracing::debug!(%bound, "metrics endpoint stopped");
    });
    tracing::info!(%bound, "metrics served at http://{bound}/metrics");
    Ok(bound)
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// The metrics; without the body for HEAD.
    Metrics {
        body: bool,
    },
    /// Liveness: the process answers.
    Live {
        body: bool,
    },
    /// Readiness: the hub serves and its database answers.
    Ready {
        body: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Routes a request by its request line (`GET /metrics HTTP/1.1`); headers are not needed.
fn route(head: &[u8]) -> Route {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Route::BadRequest;
    }
    let body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => return Route::MethodNotAllowed,
    };
    // Scrapers may add parameters; none is used.
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/metrics" => Route::Metrics { body },
        "/healthz" => Route::Live { body },
        "/readyz" => Route::Ready { body },
        _ => Route::NotFound,
    }
}

/// Where the request head ends (after its blank line), if it has.
fn head_end(buffer: &[u8]) -> Option<usize> {
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, metrics: &Metrics, readiness: &Readiness) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // The whole head is read before answering: closing a socket with unread bytes resets the
    // connection, which can lose the answer on its way.
    let head = loop {
        if let Some(end) = head_end(&buffer) {
            break &buffer[..end];
        }
        if buffer.len() > MAX_REQUEST_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
            )
            .await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            // Closed before a whole request: nobody to answer.
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    match route(head) {
        Route::Metrics { body } => {
            let text = metrics.scrape().await;
            let shown = if body { text.as_bytes() } else { b"" };
            respond_sized(&mut stream, "200 OK", CONTENT_TYPE, text.len(), shown).await
        }
        Route::Live { body } => {
            let text: &[u8] = b"ok\n";
            respond_sized(
                &mut stream,
                "200 OK",
                "text/plain",
                text.len(),
                if body { text } else { b"" },
            )
            .await
        }
        Route::Ready { body } => {
            let (status, text) = match readiness.check().await {
                Ok(()) => ("200 OK", "ready\n".to_string()),
                Err(why) => ("503 Service Unavailable", format!("not ready: {why}\n")),
            };
            let shown = if body { text.as_bytes() } else { b"" };
            respond_sized(&mut stream, status, "text/plain", text.len(), shown).await
        }
        Route::NotFound => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"not found; metrics are at /metrics, probes at /healthz and /readyz\n",
            )
            .await
        }
        Route::MethodNotAllowed => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                b"only GET and HEAD\n",
            )
            .await
        }
        Route::BadRequest => respond(&mut stream, "400 Bad Request", "text/plain", b"bad request\n").await,
    }
}

async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    respond_sized(stream, status, content_type, body.len(), body).await
}

/// Writes an answer whose body is `length` bytes long, of which `body` is sent (nothing for HEAD).
async fn respond_sized(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    length: usize,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await?;
    // Closing a socket that still has unread bytes resets the connection, which can destroy the
    // answer before the client reads it (a request body, a refused oversized head). What is
    // left is read and dropped, a bounded amount for a bounded time, until the client closes.
    let mut rest = [0u8; 4096];
    let mut drained = 0;
    let linger = tokio::time::Instant::now() + LINGER;
    while drained < MAX_LINGER_BYTES {
        match tokio::time::timeout_at(linger, stream.read(&mut rest)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of a rendering, as (name with labels, value).
    fn samples(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("a sample line has a value");
                (series.to_string(), value.to_string())
            })
            .collect()
    }

    fn value(text: &str, series: &str) -> Option<String> {
        samples(text).into_iter().find(|(s, _)| s == series).map(|(_, v)| v)
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_label("市公安局"), "市公安局");
        let metrics = Metrics::new();
        metrics.set_scorecard("dept \"A\"\n", r"on\time", 0.5);
        let text = metrics.render();
        assert!(
            text.contains(r#"xinqiao_scorecard{department="dept \"A\"\n",indicator="on\\time"} 0.5"#),
            "{text}"
        );
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_inf() {
        let metrics = Metrics::new();
        for seconds in [0.0005, 0.3, 0.3, 20.0] {
            metrics.record_rpc("WhoAmI", Code::Ok, Duration::from_secs_f64(seconds));
        }
        metrics.record_rpc("WhoAmI", Code::PermissionDenied, Duration::from_millis(2));
        let text = metrics.render();
        let bucket = |le: &str| {
            value(
                &text,
                &format!(r#"xinqiao_rpc_duration_seconds_bucket{{method="WhoAmI",le="{le}"}}"#),
            )
        };
        assert_eq!(bucket("0.001").as_deref(), Some("1"));
        assert_eq!(bucket("0.0025").as_deref(), Some("2"));
        assert_eq!(bucket("0.25").as_deref(), Some("2"));
        assert_eq!(bucket("0.5").as_deref(), Some("4"));
        assert_eq!(bucket("10").as_deref(), Some("4"));
        assert_eq!(bucket("+Inf").as_deref(), Some("5"));
        assert_eq!(
            value(&text, r#"xinqiao_rpc_duration_seconds_count{method="WhoAmI"}"#).as_deref(),
            Some("5")
        );
        let sum: f64 = value(&text, r#"xinqiao_rpc_duration_seconds_sum{method="WhoAmI"}"#)
            .expect("a sum")
            .parse()
            .expect("a number");
        assert!((sum - 20.6025).abs() < 1e-9, "{sum}");
        assert_eq!(
            value(&text, r#"xinqiao_rpc_requests_total{method="WhoAmI",code="OK"}"#).as_deref(),
            Some("4")
        );
        assert_eq!(
            value(
                &text,
                r#"xinqiao_rpc_requests_total{method="WhoAmI",code="PERMISSION_DENIED"}"#
            )
            .as_deref(),
            Some("1")
        );
        // Buckets never decrease.
        let counts: Vec<u64> = samples(&text)
            .iter()
            .filter(|(s, _)| s.starts_with("xinqiao_rpc_duration_seconds_bucket"))
            .map(|(_, v)| v.parse().expect("a count"))
            .collect();
        assert_eq!(counts.len(), BUCKETS.len() + 1);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    }

    #[test]
    fn every_family_has_help_and_type_and_every_line_is_well_formed() {
        let metrics = Metrics::new();
        metrics.records_published("DS1", 3);
        metrics.records_delivered("DS1", 2);
        metrics.validation_failures("DS2", 1);
        metrics.audit_chain_length(7);
        metrics.record_rpc("Publish", Code::Ok, Duration::from_millis(5));
        let text = metrics.render();
        assert!(text.ends_with('\n'));
        for family in [
            "xinqiao_rpc_requests_total counter",
            "xinqiao_rpc_duration_seconds histogram",
            "xinqiao_records_published_total counter",
            "xinqiao_records_delivered_total counter",
            "xinqiao_validation_failures_total counter",
            "xinqiao_subscription_lag gauge",
            "xinqiao_subscriptions gauge",
            "xinqiao_audit_chain_length gauge",
            "xinqiao_scorecard gauge",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family}\n")),
                "{family} missing in\n{text}"
            );
        }
        for (series, value) in samples(&text) {
            assert!(series.starts_with("xinqiao_"), "{series}");
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{series} {value}");
        }
        assert_eq!(
            value(&text, r#"xinqiao_records_published_total{dataset="DS1"}"#).as_deref(),
            Some("3")
        );
        assert_eq!(
            value(&text, r#"xinqiao_records_delivered_total{dataset="DS1"}"#).as_deref(),
            Some("2")
        );
        assert_eq!(
            value(&text, r#"xinqiao_records_published_total{dataset="DS2"}"#).as_deref(),
            Some("0")
        );
        assert_eq!(
            value(&text, r#"xinqiao_validation_failures_total{dataset="DS2"}"#).as_deref(),
            Some("1")
        );
        assert_eq!(value(&text, "xinqiao_audit_chain_length").as_deref(), Some("7"));
        metrics.audit_chain_length(5);
        assert_eq!(
            value(&metrics.render(), "xinqiao_audit_chain_length").as_deref(),
            Some("7"),
            "the chain only grows"
        );
    }

    #[test]
    fn floats_use_the_formats_spelling() {
        assert_eq!(number(0.0025), "0.0025");
        assert_eq!(number(10.0), "10");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }

    #[test]
    fn lag_is_the_furthest_behind_live_subscription() {
        let metrics = Metrics::new();
        let lag = |m: &Metrics| value(&m.render(), r#"xinqiao_subscription_lag{dataset="DS1"}"#);
        let live = |m: &Metrics| value(&m.render(), r#"xinqiao_subscriptions{dataset="DS1"}"#);
        let a = metrics.subscription("DS1");
        let b = metrics.subscription("DS1");
        a.set(5);
        b.set(9);
        assert_eq!(
            (lag(&metrics).as_deref(), live(&metrics).as_deref()),
            (Some("9"), Some("2"))
        );
        drop(b);
        assert_eq!(
            (lag(&metrics).as_deref(), live(&metrics).as_deref()),
            (Some("5"), Some("1"))
        );
        drop(a);
        assert_eq!(
            (lag(&metrics).as_deref(), live(&metrics).as_deref()),
            (Some("0"), Some("0"))
        );
    }

    #[test]
    fn hubs_do_not_share_numbers() {
        let (one, other) = (Metrics::new(), Metrics::new());
        one.records_published("DS1", 1);
        one.clone().records_published("DS1", 1);
        assert!(
            one.render()
                .contains("xinqiao_records_published_total{dataset=\"DS1\"} 2\n")
        );
        assert!(!other.render().contains("DS1"));
    }

    #[test]
    fn methods_are_named_by_the_services_descriptors() {
        assert_eq!(method_of("/xinqiao.v1.DirectoryService/WhoAmI"), "WhoAmI");
        assert_eq!(method_of("/xinqiao.v1.ExchangeService/Subscribe"), "Subscribe");
        assert_eq!(method_of("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(
            method_of("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            "ServerReflectionInfo"
        );
        assert_eq!(method_of("/xinqiao.v1.DirectoryService/MadeUp"), UNKNOWN_METHOD);
        assert_eq!(method_of("/"), UNKNOWN_METHOD);
    }

    #[test]
    fn statuses_come_from_trailers_only_answers() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_of(&headers), Code::Ok);
        headers.insert("grpc-status", http::HeaderValue::from_static("7"));
        assert_eq!(status_of(&headers), Code::PermissionDenied);
        headers.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(status_of(&headers), Code::Unknown);
    }

    #[test]
    fn requests_are_routed_by_their_request_line() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { body: true }
        );
        assert_eq!(
            route(b"GET /metrics?name[]=up HTTP/1.0\r\n\r\n"),
            Route::Metrics { body: true }
        );
        assert_eq!(route(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics { body: false });
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /healthz HTTP/1.1\r\n\r\n"), Route::Live { body: true });
        assert_eq!(
            route(b"HEAD /readyz?verbose HTTP/1.1\r\n\r\n"),
            Route::Ready { body: false }
        );
        assert_eq!(route(b"GET /metrics/x HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics SPDY/3\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET  /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(
            route(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n"),
            Route::BadRequest
        );
        assert_eq!(route(b""), Route::BadRequest);
    }

    #[test]
    fn request_heads_end_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    async fn head_of(sequences: &[u64], floor: u64) -> (u64, usize) {
        let probes = std::cell::Cell::new(0);
        let head = find_head(floor, |after| {
            probes.set(probes.get() + 1);
            let next = sequences.iter().copied().find(|s| *s > after);
            async move { Ok(next) }
        })
        .await
        .expect("no store errors here");
        (head, probes.get())
    }

    #[tokio::test]
    async fn the_chain_head_is_found_in_few_lookups() {
        let chain: Vec<u64> = (1..=100_000).collect();
        let (head, probes) = head_of(&chain, 0).await;
        assert_eq!(head, 100_000);
        assert!(probes < 40, "{probes} lookups");
        assert_eq!(head_of(&chain, 100_000).await, (100_000, 1), "nothing new: one lookup");
        assert_eq!(head_of(&chain, 99_990).await.0, 100_000);
        // Pruned: the stored events start above the checkpoint; with none left, the head is it.
        assert_eq!(head_of(&[41, 42, 43], 40).await.0, 43);
        assert_eq!(head_of(&[], 40).await.0, 40);
        assert_eq!(head_of(&[], 0).await.0, 0);
        // Gaps (a sequence given to a transaction that rolled back) do not matter.
        assert_eq!(head_of(&[1, 2, 5, 9, 1000], 0).await.0, 1000);
    }

    #[test]
    fn every_compiled_in_descriptor_set_decodes() {
        for set in [
            xinqiao_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            assert!(prost_types::FileDescriptorSet::decode(set).is_ok());
        }
    }
}
