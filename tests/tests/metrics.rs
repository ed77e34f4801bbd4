//! The Prometheus endpoint of a real hub: gRPC calls over mutual TLS, then `/metrics` scraped over
//! plain HTTP and read with a Prometheus text-format parser.
//!
//! The hubs here are started directly rather than with `TestHub`, which does not expose the
//! address the metrics endpoint was bound to (port 0 in tests).

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::Channel;
use xinqiao_hub::tls::{ClientIdentity, connect};
use xinqiao_hub::{Config, RunningHub, pki, server};
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_tests::v1 as pb;
use xinqiao_tests::{HEALTH, POLICE, SAMR, register_request};

/// A hub on SQLite serving `/metrics` on a free loopback port.
struct Hub {
    running: RunningHub,
    metrics: SocketAddr,
    dir: TempDir,
}

async fn start_hub() -> Hub {
    xinqiao_hub::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temporary directory");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = Config {
        listen: Some(loopback),
        data_dir: Some(dir.path().to_path_buf()),
        ..Config::default()
    };
    config.limits.shutdown_grace_secs = 5;
    config.metrics.listen = Some(loopback);
    pki::init(&config.pki_dir(), &[]).expect("development PKI");
    let running = server::start(&config).await.expect("the hub starts");
    server::register_sample_departments(running.store.as_ref())
        .await
        .expect("sample departments");
    let metrics = running.metrics_addr.expect("metrics are served when configured");
    assert_ne!(metrics.port(), 0, "the bound port is returned");
    Hub { running, metrics, dir }
}

impl Hub {
    async fn channel(&self, code: &str) -> Channel {
        let pki_dir = self.dir.path().join("pki");
        let files = pki::department_files(&pki_dir, code);
        let identity = ClientIdentity {
            ca: pki::ca_cert_path(&pki_dir),
            cert: files.cert,
            key: files.key,
        };
        let url = format!("https://127.0.0.1:{}", self.running.addr.port());
        connect(&url, &identity).await.expect("connect to the hub")
    }

    async fn dept(&self, code: &str) -> DirectoryServiceClient<Channel> {
        DirectoryServiceClient::new(self.channel(code).await)
    }

    async fn finish(self) {
        self.running.stop().await.expect("the hub stops gracefully");
    }
}

/// An HTTP answer: status code, head (status line and headers), body.
struct HttpAnswer {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` as it is and reads the answer until the server closes the connection.
async fn http(addr: SocketAddr, request: &[u8]) -> HttpAnswer {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the metrics endpoint");
    stream.write_all(request).await.expect("send the request");
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut bytes))
        .await
        .expect("the endpoint answers and closes in time")
        .expect("read the answer");
    let text = String::from_utf8(bytes).expect("the answer is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer has a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    HttpAnswer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let answer = http(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: hub\r\nAccept: text/plain\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        answer.head
    );
    Scrape::parse(answer.body.lines().map(|l| Ok(l.to_string()))).expect("the body parses as Prometheus text")
}

fn labelled<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(name, value)| s.labels.get(name) == Some(*value)))
}

fn counter(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    labelled(scrape, metric, labels).map(|s| match s.value {
        Value::Counter(v) => v,
        ref other => panic!("{metric} is not a counter: {other:?}"),
    })
}

fn calls(scrape: &Scrape, method: &str, code: &str) -> Option<f64> {
    counter(
        scrape,
        "xinqiao_rpc_requests_total",
        &[("method", method), ("code", code)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_are_counted_by_method_and_status_code() {
    let hub = start_hub().await;
    let mut samr = hub.dept(SAMR).await;
    for _ in 0..2 {
        samr.who_am_i(pb::WhoAmIRequest {})
            .await
            .expect("WhoAmI as a department");
    }
    let refused = hub
        .dept(POLICE)
        .await
        .register_department(register_request(HEALTH, "市卫生健康委员会"))
        .await
        .expect_err("only the admin registers departments");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut health = tonic_health::pb::health_client::HealthClient::new(hub.channel(SAMR).await);
    health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("the health check answers");

    let scrape = scrape(hub.metrics).await;
    assert_eq!(calls(&scrape, "WhoAmI", "OK"), Some(2.0));
    assert_eq!(calls(&scrape, "RegisterDepartment", "PERMISSION_DENIED"), Some(1.0));
    assert_eq!(
        calls(&scrape, "RegisterDepartment", "OK"),
        None,
        "nothing was registered"
    );
    assert_eq!(
        calls(&scrape, "Check", "OK"),
        Some(1.0),
        "health checks are counted under their own name"
    );

    let histogram = labelled(&scrape, "xinqiao_rpc_duration_seconds", &[("method", "WhoAmI")])
        .expect("WhoAmI has a latency histogram");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {:?}", histogram.value)
    };
    assert_eq!(buckets.len(), 14, "13 bounds from 1 ms to 10 s, and +Inf");
    let mut bounds: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(bounds.first().map(|b| b.0), Some(0.001));
    assert_eq!(bounds.last(), Some(&(f64::INFINITY, 2.0)), "every call is under +Inf");
    assert!(bounds.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {bounds:?}");
    let untyped = |metric: &str| match labelled(&scrape, metric, &[("method", "WhoAmI")]).map(|s| &s.value) {
        Some(Value::Untyped(v)) => *v,
        other => panic!("{metric}: {other:?}"),
    };
    assert_eq!(untyped("xinqiao_rpc_duration_seconds_count"), 2.0);
    assert!(untyped("xinqiao_rpc_duration_seconds_sum") > 0.0);

    // The refusal was written to the audit trail before it was answered.
    let chain = labelled(&scrape, "xinqiao_audit_chain_length", &[]).expect("the audit chain's length");
    assert!(matches!(chain.value, Value::Gauge(n) if n >= 1.0), "{:?}", chain.value);
    hub.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hub_counts_only_its_own_calls() {
    let (one, other) = (start_hub().await, start_hub().await);
    one.dept(SAMR)
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("WhoAmI");
    assert_eq!(calls(&scrape(one.metrics).await, "WhoAmI", "OK"), Some(1.0));
    assert_eq!(calls(&scrape(other.metrics).await, "WhoAmI", "OK"), None);
    one.finish().await;
    other.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_answers_only_metrics_and_survives_garbage() {
    let hub = start_hub().await;
    let addr = hub.metrics;
    // A client that starts a request and never finishes it does not hold up the others.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    stalled.write_all(b"GET /metr").await.expect("send half a request");

    assert_eq!(http(addr, b"GET / HTTP/1.1\r\n\r\n").await.status, 404);
    assert_eq!(http(addr, b"GET /metrics/extra HTTP/1.1\r\n\r\n").await.status, 404);
    assert_eq!(
        http(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .await
            .status,
        405
    );
    assert_eq!(
        http(addr, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n")
            .await
            .status,
        400
    );
    assert_eq!(http(addr, b"hello\r\n\r\n").await.status, 400);
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    assert_eq!(http(addr, &huge).await.status, 431);
    // A connection closed before a whole request is simply dropped.
    drop(TcpStream::connect(addr).await.expect("connect"));

    let head = http(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let families = scrape(addr).await.docs;
    for family in [
        "xinqiao_rpc_requests_total",
        "xinqiao_rpc_duration_seconds",
        "xinqiao_records_published_total",
        "xinqiao_records_delivered_total",
        "xinqiao_validation_failures_total",
        "xinqiao_subscription_lag",
        "xinqiao_subscriptions",
        "xinqiao_audit_chain_length",
        "xinqiao_scorecard",
    ] {
        assert!(families.contains_key(family), "{family} is not described: {families:?}");
    }
    drop(stalled);
    hub.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_stops_with_the_hub() {
    let hub = start_hub().await;
    let addr = hub.metrics;
    hub.running.metrics.set_scorecard(SAMR, "catalogue_completeness", 0.75);
    let scraped = scrape(addr).await;
    let score = labelled(
        &scraped,
        "xinqiao_scorecard",
        &[("department", SAMR), ("indicator", "catalogue_completeness")],
    )
    .map(|s| s.value.clone());
    assert_eq!(score, Some(Value::Gauge(0.75)));
    assert!(labelled(&scraped, "xinqiao_audit_chain_length", &[]).is_some_and(|s| s.labels.is_empty()));

    hub.finish().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/metrics still served after the hub stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
