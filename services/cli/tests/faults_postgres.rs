//! Faults (issue #15, item 5): the PostgreSQL server restarted under load. A hub (`serve --dev`
//! on PostgreSQL, in a fresh schema) serves four publishers sending idempotent batches and a
//! follower reading as a named consumer, while the test restarts the database server twice
//! (`pg_ctlcluster … -m fast restart`: a fast shutdown that ends every connection, then a start).
//! Afterwards:
//!
//! - every call that failed while the database was away failed with UNAVAILABLE (the caller may
//!   retry), never INTERNAL, and none hung;
//! - the hub recovered by itself: the same process acknowledged batches again after each restart;
//! - the log holds 1..N without a gap, every acknowledged batch exactly once where its
//!   acknowledgement said;
//! - the follower saw every change once, in order, without a gap (resending an acknowledgement
//!   that did not get through before subscribing again), and its cursor is at the end;
//! - the audit chain verifies intact.
//!
//! This restarts the PostgreSQL server every other PostgreSQL test uses, so it runs only when
//! XINQIAO_TEST_PG_RESTART=1 (and XINQIAO_TEST_DATABASE_URL names the database), as a CI step
//! of its own; otherwise it says it was skipped. It needs root (pg_ctlcluster) and the Debian
//! cluster serving the URL's port; it holds /tmp/xinqiao-pg-restart.lock (flock) while it runs,
//! and whatever happens, it leaves the server running.

mod support;

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::time::{Instant, timeout};
use tonic::Code;
use xinqiao_proto::v1 as pb;

const RESTART_VAR: &str = "XINQIAO_TEST_PG_RESTART";
const LOCK_FILE: &str = "/tmp/xinqiao-pg-restart.lock";
/// Restarts of the database server: the other tests on this server see each as a short outage.
const RESTARTS: usize = 2;
const PUBLISHERS: u64 = 4;
const BATCH: u64 = 25;
const CONSUMER: &str = "pg-restart-follower";
/// Batches each publisher gets acknowledged before a restart, and again after it.
const WARM: usize = 5;
const PACE: Duration = Duration::from_millis(2);
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Failure guards: one call (a call that takes longer has hung), a wait for a condition, the
/// server's restart and start, and the whole test.
const CALL_GUARD: Duration = Duration::from_secs(20);
const WAIT_GUARD: Duration = Duration::from_secs(40);
const SERVER_GUARD: Duration = Duration::from_secs(60);
const TEST_GUARD: Duration = Duration::from_secs(110);

/// The Debian PostgreSQL cluster (`pg_lsclusters`) that listens on a port.
#[derive(Debug, Clone)]
struct Cluster {
    version: String,
    name: String,
}

impl Cluster {
    fn on_port(port: u16) -> Result<Cluster, String> {
        let out = Command::new("pg_lsclusters")
            .arg("--no-header")
            .output()
            .map_err(|e| format!("cannot run pg_lsclusters: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[2] == port.to_string())
            .map(|f| Cluster {
                version: f[0].to_string(),
                name: f[1].to_string(),
            })
            .ok_or_else(|| format!("no cluster on port {port} in pg_lsclusters:\n{text}"))
    }

    /// `pg_ctlcluster --skip-systemctl-redirect -m fast VERSION NAME ACTION`.
    fn control(&self, action: &str) -> Result<(), String> {
        let out = Command::new("pg_ctlcluster")
            .args([
                "--skip-systemctl-redirect",
                "-m",
                "fast",
                &self.version,
                &self.name,
                action,
            ])
            .output()
            .map_err(|e| format!("cannot run pg_ctlcluster: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctlcluster {} {} {action}: {}{}",
                self.version,
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn online(&self) -> bool {
        Command::new("pg_lsclusters")
            .args([&self.version, &self.name, "--no-header"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(" online "))
    }
}

/// Leaves the server running when dropped, also when the test fails part-way.
struct ServerBackUp {
    cluster: Cluster,
    host: String,
    port: u16,
}

impl ServerBackUp {
    fn accepting(&self) -> bool {
        Command::new("pg_isready")
            .args(["-q", "-h", &self.host, "-p", &self.port.to_string(), "-t", "1"])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the server if it is down, and waits until it accepts connections.
    fn ensure_up(&self) -> Result<(), String> {
        let deadline = std::time::Instant::now() + SERVER_GUARD;
        while !self.accepting() {
            if !self.cluster.online() {
                let _ = self.cluster.control("start");
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("PostgreSQL on port {} is not back up", self.port));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

impl Drop for ServerBackUp {
    fn drop(&mut self) {
        if let Err(e) = self.ensure_up() {
            eprintln!(
                "{e}: start it with pg_ctlcluster {} {} start",
                self.cluster.version, self.cluster.name
            );
        }
    }
}

/// The host and port of a `postgres://user@host:port/db` URL (port 5432 when none is given).
fn host_and_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().expect("a port number")),
        None => (host_port.to_string(), 5432),
    }
}

/// A failed call, and when.
#[derive(Debug)]
struct Failure {
    at: Instant,
    what: String,
    code: Option<Code>,
    message: String,
}

struct Shared {
    port: u16,
    pki: PathBuf,
    dataset: String,
    stop: AtomicBool,
    /// The last sequence the follower must reach (0 until the publishers are done).
    target: AtomicU64,
    /// Batches acknowledged, by all publishers, and the highest sequence acknowledged.
    batches: AtomicU64,
    acknowledged: AtomicU64,
    /// The highest sequence the follower has seen.
    followed: AtomicU64,
    failures: Mutex<Vec<Failure>>,
}

impl Shared {
    fn failed(&self, what: String, status: Option<&tonic::Status>) {
        self.failures.lock().expect("log").push(Failure {
            at: Instant::now(),
            what,
            code: status.map(tonic::Status::code),
            message: status.map(|s| s.message().to_string()).unwrap_or_default(),
        });
    }
}

fn batch_name(p: u64, b: u64, i: u64) -> String {
    format!("pgr-{p}-{b}-{i}")
}

fn batch_request(dataset: &str, p: u64, b: u64) -> pb::PublishRequest {
    let changes = (0..BATCH)
        .map(|i| upsert(record(p * 1_000_000 + b * BATCH + i, &batch_name(p, b, i))))
        .collect();
    publish_request(dataset, &format!("pgr-{p}-{b}"), changes)
}

/// Publishes batches `pgr-P-0`, `pgr-P-1`… as SAMR until told to stop, each until acknowledged.
/// Batch number → the first and last sequence of its acknowledgement.
async fn publisher(p: u64, shared: Arc<Shared>) -> HashMap<u64, (u64, u64)> {
    let mut acked = HashMap::new();
    let mut client: Option<Exchange> = None;
    let mut b = 0;
    while !shared.stop.load(SeqCst) {
        let request = batch_request(&shared.dataset, p, b);
        loop {
            let mut c = match client.take() {
                Some(c) => c,
                None => match exchange(shared.port, &shared.pki, SAMR).await {
                    Ok(c) => c,
                    Err(e) => panic!("publisher {p}: the hub does not take connections: {e}"),
                },
            };
            match timeout(CALL_GUARD, c.publish(request.clone())).await {
                Ok(Ok(answer)) => {
                    let answer = answer.into_inner();
                    assert_eq!(
                        (answer.accepted as u64, answer.last_sequence + 1 - answer.first_sequence),
                        (BATCH, BATCH),
                        "publisher {p} batch {b}: {answer:?}"
                    );
                    acked.insert(b, (answer.first_sequence, answer.last_sequence));
                    shared.batches.fetch_add(1, SeqCst);
                    shared.acknowledged.fetch_max(answer.last_sequence, SeqCst);
                    client = Some(c);
                    break;
                }
                Ok(Err(status)) if is_refusal(&status) && status.code() != Code::ResourceExhausted => {
                    panic!(
                        "publisher {p} batch {b} refused: {:?} {}",
                        status.code(),
                        status.message()
                    )
                }
                Ok(Err(status)) => shared.failed(format!("publish {p}/{b}"), Some(&status)),
                Err(_) => shared.failed(format!("publish {p}/{b}: no answer within {CALL_GUARD:?}"), None),
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        b += 1;
        tokio::time::sleep(PACE).await;
    }
    acked
}

#[derive(Debug, Default)]
struct FollowerLog {
    received: Vec<u64>,
    redelivered: Vec<u64>,
    gaps: Vec<String>,
    subscriptions: u64,
    resent_acks: u64,
}

/// Follows the dataset as POLICE's named consumer until it has seen the target sequence. When
/// its stream or an acknowledgement fails it resends the acknowledgement, then subscribes again
/// from its cursor.
async fn follower(shared: Arc<Shared>) -> FollowerLog {
    let mut log = FollowerLog::default();
    let mut highest = 0u64;
    let mut unacknowledged: Option<u64> = None;
    let caught_up = |highest: u64| {
        let target = shared.target.load(SeqCst);
        target > 0 && highest >= target
    };
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        first = false;
        if caught_up(highest) {
            return log;
        }
        let mut client = match exchange(shared.port, &shared.pki, POLICE).await {
            Ok(c) => c,
            Err(e) => panic!("follower: the hub does not take connections: {e}"),
        };
        if let Some(sequence) = unacknowledged {
            let ack = pb::AcknowledgeRequest {
                dataset: shared.dataset.clone(),
                consumer: CONSUMER.into(),
                sequence,
            };
            match timeout(CALL_GUARD, client.acknowledge(ack)).await {
                Ok(Ok(_)) => {
                    log.resent_acks += 1;
                    unacknowledged = None;
                }
                Ok(Err(status)) if is_refusal(&status) => {
                    panic!(
                        "follower: acknowledge refused: {:?} {}",
                        status.code(),
                        status.message()
                    )
                }
                Ok(Err(status)) => {
                    shared.failed("acknowledge (resent)".into(), Some(&status));
                    continue;
                }
                Err(_) => {
                    shared.failed("acknowledge (resent): no answer".into(), None);
                    continue;
                }
            }
        }
        let request = pb::SubscribeRequest {
            dataset: shared.dataset.clone(),
            after_sequence: 0,
            consumer: CONSUMER.into(),
            max_batch: 100,
            purpose: PURPOSE.into(),
            grant_id: String::new(),
        };
        let mut stream = match timeout(CALL_GUARD, client.subscribe(request)).await {
            Ok(Ok(stream)) => stream.into_inner(),
            Ok(Err(status)) if is_refusal(&status) => {
                panic!("follower: subscribe refused: {:?} {}", status.code(), status.message())
            }
            Ok(Err(status)) => {
                shared.failed("subscribe".into(), Some(&status));
                continue;
            }
            Err(_) => {
                shared.failed("subscribe: no answer".into(), None);
                continue;
            }
        };
        log.subscriptions += 1;
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if caught_up(highest) {
                        return log;
                    }
                    continue;
                }
            };
            let batch = match message {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    shared.failed("subscription ended without a status".into(), None);
                    break;
                }
                Err(status) => {
                    shared.failed("subscription".into(), Some(&status));
                    break;
                }
            };
            for change in &batch.changes {
                let s = change.sequence;
                if s <= highest {
                    log.redelivered.push(s);
                    continue;
                }
                if s != highest + 1 {
                    log.gaps.push(format!("{s} after {highest}"));
                }
                highest = s;
                log.received.push(s);
            }
            shared.followed.store(highest, SeqCst);
            let ack = pb::AcknowledgeRequest {
                dataset: shared.dataset.clone(),
                consumer: CONSUMER.into(),
                sequence: highest,
            };
            match timeout(CALL_GUARD, client.acknowledge(ack)).await {
                Ok(Ok(_)) => {}
                Ok(Err(status)) if is_refusal(&status) => {
                    panic!(
                        "follower: acknowledge refused: {:?} {}",
                        status.code(),
                        status.message()
                    )
                }
                Ok(Err(status)) => {
                    shared.failed("acknowledge".into(), Some(&status));
                    unacknowledged = Some(highest);
                    break;
                }
                Err(_) => {
                    shared.failed("acknowledge: no answer".into(), None);
                    unacknowledged = Some(highest);
                    break;
                }
            }
        }
    }
}

/// Waits at most `WAIT_GUARD` until `done()` holds.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT_GUARD;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not so within {WAIT_GUARD:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Both publishers have more batches acknowledged, and the follower has caught up with them.
async fn wait_for_progress(shared: &Shared, when: &str) {
    let from = shared.batches.load(SeqCst);
    wait_until(&format!("{when}: publishes acknowledged again"), || {
        shared.batches.load(SeqCst) >= from + WARM as u64 * PUBLISHERS
    })
    .await;
    let acknowledged = shared.acknowledged.load(SeqCst);
    wait_until(&format!("{when}: the follower reaches sequence {acknowledged}"), || {
        shared.followed.load(SeqCst) >= acknowledged
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_under_load_loses_nothing_and_the_hub_recovers_by_itself() {
    if std::env::var(RESTART_VAR).ok().as_deref() != Some("1") {
        println!(
            "skipping postgres_restarted_under_load_loses_nothing_and_the_hub_recovers_by_itself: it restarts the \
             shared PostgreSQL server; set {RESTART_VAR}=1 (and {PG_URL_VAR}) to run it"
        );
        return;
    }
    let url = std::env::var(PG_URL_VAR)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| panic!("{RESTART_VAR}=1 but {PG_URL_VAR} is not set"));
    // One such test at a time on this machine.
    let lock = File::create(LOCK_FILE).unwrap_or_else(|e| panic!("cannot create {LOCK_FILE}: {e}"));
    lock.lock().unwrap_or_else(|e| panic!("cannot lock {LOCK_FILE}: {e}"));
    let (host, port) = host_and_port(&url);
    let cluster = Cluster::on_port(port).unwrap_or_else(|e| panic!("{RESTART_VAR}=1: {e}"));
    let schema = TestSchema::create("xq_pg_restart")
        .await
        .expect("the test database is set");
    // Dropped before the schema, so that the schema is dropped on a running server.
    let server = ServerBackUp { cluster, host, port };
    server.ensure_up().expect("PostgreSQL is up before the test");
    timeout(TEST_GUARD, run(&schema.node_url(), &server))
        .await
        .expect("the PostgreSQL restart test finishes in time");
}

async fn run(database_url: &str, server: &ServerBackUp) {
    let began = Instant::now();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let data = tmp.path().join("data");
    let port = free_port();
    let log = log_file(tmp.path(), "hub.log");
    let mut hub = dev_hub_on(&data, port, Some(database_url), &log).await;
    let pid = hub.pid();
    let pki_dir = data.join("pki");
    let dataset = open_dataset(port, &pki_dir, "企业登记信息").await;
    let shared = Arc::new(Shared {
        port,
        pki: pki_dir.clone(),
        dataset: dataset.clone(),
        stop: AtomicBool::new(false),
        target: AtomicU64::new(0),
        batches: AtomicU64::new(0),
        acknowledged: AtomicU64::new(0),
        followed: AtomicU64::new(0),
        failures: Mutex::default(),
    });
    let following = tokio::spawn(follower(shared.clone()));
    let publishing: Vec<_> = (0..PUBLISHERS)
        .map(|p| tokio::spawn(publisher(p, shared.clone())))
        .collect();
    wait_for_progress(&shared, "before the first restart").await;

    let mut windows = Vec::new();
    for r in 0..RESTARTS {
        let batches_before = shared.batches.load(SeqCst);
        let from = Instant::now();
        let cluster = server.cluster.clone();
        let restarted = tokio::task::spawn_blocking(move || cluster.control("restart"))
            .await
            .expect("pg_ctlcluster ran");
        let restart_took = from.elapsed();
        if let Err(e) = restarted {
            server.ensure_up().expect("PostgreSQL back up after a failed restart");
            panic!("restart {}: {e}", r + 1);
        }
        let back = Instant::now();
        wait_for_progress(&shared, &format!("after restart {}", r + 1)).await;
        windows.push((r + 1, restart_took, back.elapsed(), batches_before));
    }
    shared.stop.store(true, SeqCst);
    let mut acked = Vec::new();
    for (p, publisher) in publishing.into_iter().enumerate() {
        acked.push(publisher.await.unwrap_or_else(|e| panic!("publisher {p}: {e}")));
    }
    let batches: u64 = acked.iter().map(|a| a.len() as u64).sum();
    let total = batches * BATCH;
    shared.target.store(total, SeqCst);
    let followed = timeout(WAIT_GUARD, following)
        .await
        .expect("the follower catches up")
        .expect("the follower");

    assert_eq!(hub.pid(), pid, "the same hub process served throughout");
    assert_eq!(hub.starts, 1);

    // The log: 1..N, each acknowledged batch exactly once where its acknowledgement said.
    let mut reader = exchange_when_up(port, &pki_dir, POLICE).await;
    let changes = fetch_all(&mut reader, &dataset).await;
    assert!(
        changes.iter().map(|c| c.sequence).eq(1..=total),
        "the log holds 1..{total} without a gap: {} changes",
        changes.len()
    );
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for change in &changes {
        seen.entry(name_of(change)).or_default().push(change.sequence);
    }
    for (p, batches) in acked.iter().enumerate() {
        for (b, (first, last)) in batches {
            assert_eq!(last - first + 1, BATCH);
            for i in 0..BATCH {
                let name = batch_name(p as u64, *b, i);
                assert_eq!(
                    seen.get(&name).map(Vec::as_slice),
                    Some(&[first + i][..]),
                    "{name}: exactly once, where its batch's acknowledgement said"
                );
            }
        }
    }
    assert_eq!(seen.len() as u64, total, "nothing that was not acknowledged");

    // The follower: every change once, in order, and its cursor at the end.
    assert!(
        followed.gaps.is_empty(),
        "the follower skipped changes: {:?}",
        followed.gaps
    );
    assert!(
        followed.redelivered.is_empty(),
        "the follower saw changes twice: {:?}",
        followed.redelivered
    );
    assert!(
        followed.received.iter().copied().eq(1..=total),
        "the follower saw 1..{total} in order: {} changes",
        followed.received.len()
    );
    let cursor = ok(reader
        .get_consumer(pb::GetConsumerRequest {
            dataset: dataset.clone(),
            consumer: CONSUMER.into(),
        })
        .await);
    assert_eq!(cursor.acknowledged_sequence, total, "the follower's cursor");

    let mut audit = audit_admin_when_up(port, &pki_dir).await;
    let verdict = assert_audit_chain_intact(&mut audit, "after the PostgreSQL restarts").await;
    let text = hub.log_text();
    assert!(!text.contains("panicked"), "the hub panicked:\n{text}");

    // The calls that failed: UNAVAILABLE only, none hung (checked last, so that a failure here
    // comes after the data and the follower were found whole).
    let failures = std::mem::take(&mut *shared.failures.lock().expect("log"));
    let describe = |f: &Failure| {
        format!(
            "{} at +{:.2} s: {:?} {}",
            f.what,
            (f.at - began).as_secs_f64(),
            f.code,
            f.message
        )
    };
    let wrong: Vec<String> = failures
        .iter()
        .filter(|f| f.code != Some(Code::Unavailable))
        .map(describe)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} failed calls failed otherwise than UNAVAILABLE while PostgreSQL restarted:\n{}\nthe hub's errors:\n{}",
        wrong.len(),
        failures.len(),
        wrong.join("\n"),
        hub.log_text()
            .lines()
            .filter(|l| l.contains("ERROR"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );

    println!(
        "PostgreSQL restarted {RESTARTS} times under load in {:.1} s: {}; {} calls failed, all UNAVAILABLE ({}); \
         {batches} batches, {total} records; follower: {} subscriptions, {} acknowledgements resent; chain intact \
         ({} events)",
        began.elapsed().as_secs_f64(),
        windows
            .iter()
            .map(|(r, took, recovered, before)| format!(
                "restart {r} took {:.2} s (after {before} batches), load back to normal {:.2} s later",
                took.as_secs_f64(),
                recovered.as_secs_f64()
            ))
            .collect::<Vec<_>>()
            .join("; "),
        failures.len(),
        failures.iter().map(describe).collect::<Vec<_>>().join("; "),
        followed.subscriptions,
        followed.resent_acks,
        verdict.verified,
    );
    hub.kill();
}
