//! Zero-downtime rolling restart (issue #14, item 4): two hub processes over one PostgreSQL
//! database, restarted in turn — node 1, node 2, node 1 again — each with SIGTERM (a graceful
//! stop), a wait for its exit, and a start with the same arguments. Meanwhile publishers send
//! idempotent batches, alternating between the nodes and failing over to the other when a call
//! does not get through, and followers subscribe as named consumers, acknowledging as they go and
//! moving to whichever node is up when their stream ends. A node stays down until the clients are
//! seen working through the other one, and the next node is taken down only once the clients use
//! the restarted one again and the followers have caught up.
//!
//! Afterwards: every acknowledged batch is in the log exactly once, where its acknowledgement
//! said; each follower saw every change exactly once, in sequence order, without a gap; while
//! each node was down, the clients' calls succeeded on the other one; and each node stopped
//! promptly on SIGTERM (live streams end at once rather than holding the stop for the grace).
//!
//! A follower never sees a change twice because it resends an acknowledgement that did not get
//! through (the node it was talking to stopped) to the next node before it subscribes again: the
//! consumer cursor is in the shared database, so the new subscription starts after it.
//!
//! PostgreSQL only: without XINQIAO_TEST_DATABASE_URL the test says it was skipped and passes.

mod support;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::time::{Instant, timeout};
use xinqiao_proto::v1 as pb;

/// 市人力资源和社会保障局: the second follower's department.
const HRSS: &str = "11330100MB0003003M";
const PUBLISHERS: u64 = 3;
const FOLLOWERS: usize = 2;
const BATCH: u64 = 25;
/// Node indexes (0: node 1, 1: node 2), in the order they are restarted.
const RESTARTS: [usize; 3] = [0, 1, 0];
/// The hubs' `[limits] shutdown_grace_secs`: how long a stopping hub waits for calls in flight.
const SHUTDOWN_GRACE_SECS: u64 = 30;
/// Between two batches of one publisher: keeps the log a size the checks read quickly.
const PUBLISH_PACE: Duration = Duration::from_millis(10);
/// Before retrying after a call that did not get through.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Failure guards: one call or connection, one batch until acknowledged, a node's exit after
/// SIGTERM, the clients' move to the other node and back, and the whole test.
const CALL_GUARD: Duration = Duration::from_secs(10);
const BATCH_GUARD: Duration = Duration::from_secs(60);
const EXIT_GUARD: Duration = Duration::from_secs(SHUTDOWN_GRACE_SECS + 15);
const BACK_GUARD: Duration = Duration::from_secs(30);
const TEST_GUARD: Duration = Duration::from_secs(170);
/// A graceful stop ends live streams at once (UNAVAILABLE: resume from your cursor) rather than
/// waiting out the grace period for them, so a node stops well within this.
const STOP_PROMPTLY: Duration = Duration::from_secs(5);
/// Publishes through a node before the test takes it to be in use.
const MIN_CALLS: usize = 5;
/// A publisher stops here at the latest (a bound on its loop; the test stops it long before).
const MAX_BATCHES: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Publish,
    Subscribe,
    Receive,
    Acknowledge,
}

/// One call a client made, and where.
#[derive(Debug, Clone, Copy)]
struct Event {
    at: Instant,
    /// Publishers are clients 0…PUBLISHERS-1, followers the next FOLLOWERS.
    client: usize,
    node: usize,
    call: Call,
    ok: bool,
}

/// What the clients and the test share.
struct Shared {
    ports: [u16; 2],
    pki: PathBuf,
    dataset: String,
    events: Mutex<Vec<Event>>,
    /// Set once the restarts are over and the clients are back on both nodes: publishers stop.
    stop: AtomicBool,
    /// The last sequence the followers must reach (0 until the publishers are done).
    target: AtomicU64,
    /// The highest sequence any publish acknowledged so far.
    acknowledged: AtomicU64,
    /// The highest sequence each follower has seen.
    followed: [AtomicU64; FOLLOWERS],
    /// The hub's own internal errors, as opposed to calls that did not get through.
    internal_errors: Mutex<Vec<String>>,
}

impl Shared {
    fn record(&self, client: usize, node: usize, call: Call, ok: bool) {
        self.events.lock().expect("events").push(Event {
            at: Instant::now(),
            client,
            node,
            call,
            ok,
        });
    }

    fn failed(&self, client: usize, node: usize, call: Call, status: Option<&tonic::Status>) {
        self.record(client, node, call, false);
        if let Some(status) = status
            && is_hub_internal_error(status)
        {
            self.internal_errors.lock().expect("errors").push(format!(
                "{call:?} on node {}: {}",
                node + 1,
                status.message()
            ));
        }
    }

    /// Successful calls of `client` (any client: `None`) on `node` since `since`.
    fn served(&self, client: Option<usize>, node: usize, call: Call, since: Instant) -> usize {
        self.events
            .lock()
            .expect("events")
            .iter()
            .filter(|e| e.ok && e.node == node && e.call == call && e.at >= since)
            .filter(|e| client.is_none_or(|c| c == e.client))
            .count()
    }
}

/// An exchange client of `code` on `node`, or `None` when the connection cannot be made.
async fn connect(shared: &Shared, node: usize, code: &str) -> Option<Exchange> {
    match timeout(CALL_GUARD, exchange(shared.ports[node], &shared.pki, code)).await {
        Ok(Ok(client)) => Some(client),
        _ => None,
    }
}

fn batch_name(p: u64, b: u64, i: u64) -> String {
    format!("rr-{p}-{b}-{i}")
}

fn batch_request(dataset: &str, p: u64, b: u64) -> pb::PublishRequest {
    let changes = (0..BATCH)
        .map(|i| upsert(record(p * 1_000_000 + b * BATCH + i, &batch_name(p, b, i))))
        .collect();
    publish_request(dataset, &format!("rr-{p}-{b}"), changes)
}

#[derive(Debug, Default)]
struct PublisherLog {
    /// Batch number → the first and last sequence the acknowledgement gave it.
    acked: HashMap<u64, (u64, u64)>,
    /// Acknowledgements that answered a retry of a batch already committed.
    replayed: u64,
    /// Attempts that did not get through.
    retries: u64,
}

/// Publishes batches `rr-P-0`, `rr-P-1`… as SAMR until told to stop, each until it is
/// acknowledged. Batch `b` goes first to node `(b + p) % 2`, then to the other after a failure.
async fn publisher(p: u64, shared: Arc<Shared>) -> PublisherLog {
    let me = p as usize;
    let mut log = PublisherLog::default();
    let mut clients: [Option<Exchange>; 2] = [None, None];
    let mut b = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        assert!(b < MAX_BATCHES, "publisher {p} was never told to stop");
        let request = batch_request(&shared.dataset, p, b);
        let mut node = ((b + p) % 2) as usize;
        let deadline = Instant::now() + BATCH_GUARD;
        loop {
            assert!(
                Instant::now() < deadline,
                "publisher {p}: batch {b} not acknowledged within {BATCH_GUARD:?}"
            );
            let client = match clients[node].take() {
                Some(client) => Some(client),
                None => connect(&shared, node, SAMR).await,
            };
            let Some(mut client) = client else {
                shared.failed(me, node, Call::Publish, None);
                log.retries += 1;
                node = 1 - node;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            };
            match timeout(CALL_GUARD, client.publish(request.clone())).await {
                Ok(Ok(answer)) => {
                    let answer = answer.into_inner();
                    assert_eq!(
                        (answer.accepted as u64, answer.rejected.len()),
                        (BATCH, 0),
                        "publisher {p} batch {b}: {answer:?}"
                    );
                    assert_eq!(answer.last_sequence - answer.first_sequence + 1, BATCH);
                    if answer.replayed {
                        log.replayed += 1;
                    }
                    let range = (answer.first_sequence, answer.last_sequence);
                    if let Some(before) = log.acked.insert(b, range) {
                        panic!("publisher {p} batch {b} acknowledged twice: {before:?} and {range:?}");
                    }
                    shared.acknowledged.fetch_max(answer.last_sequence, Ordering::SeqCst);
                    shared.record(me, node, Call::Publish, true);
                    clients[node] = Some(client);
                    break;
                }
                Ok(Err(status)) if is_refusal(&status) => {
                    panic!(
                        "publisher {p} batch {b} refused by node {}: {:?} {}",
                        node + 1,
                        status.code(),
                        status.message()
                    )
                }
                Ok(Err(status)) => shared.failed(me, node, Call::Publish, Some(&status)),
                Err(_) => shared.failed(me, node, Call::Publish, None),
            }
            log.retries += 1;
            node = 1 - node;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        b += 1;
        tokio::time::sleep(PUBLISH_PACE).await;
    }
    log
}

#[derive(Debug, Default)]
struct FollowerLog {
    /// Every sequence number received, in arrival order.
    received: Vec<u64>,
    /// Changes received again (at or below the highest already seen): there must be none.
    redelivered: Vec<String>,
    /// Changes that skipped sequences: there must be none.
    gaps: Vec<String>,
    /// Subscriptions opened, on each node.
    subscriptions: [u64; 2],
    /// Acknowledgements resent to another node after the first did not get through.
    resent_acks: u64,
}

/// The department and consumer name of follower `f`.
fn follower_identity(f: usize) -> (&'static str, String) {
    (if f == 0 { POLICE } else { HRSS }, format!("rr-follower-{f}"))
}

/// Follows the dataset as follower `f` (a named consumer), starting on node `f % 2`, until it has
/// seen the target sequence. After any failure it moves to the other node, first resending the
/// acknowledgement that did not get through, then subscribing again from its cursor.
async fn follower(f: usize, shared: Arc<Shared>) -> FollowerLog {
    let me = PUBLISHERS as usize + f;
    let (code, consumer) = follower_identity(f);
    let mut node = f % 2;
    let mut log = FollowerLog::default();
    let mut highest = 0u64;
    let mut unacknowledged: Option<u64> = None;
    let caught_up = |highest: u64| {
        let target = shared.target.load(Ordering::SeqCst);
        target > 0 && highest >= target
    };
    let mut failed = false;
    loop {
        if failed {
            node = 1 - node;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        failed = true;
        if caught_up(highest) {
            return log;
        }
        let Some(mut client) = connect(&shared, node, code).await else {
            shared.failed(me, node, Call::Subscribe, None);
            continue;
        };
        if let Some(sequence) = unacknowledged {
            let ack = pb::AcknowledgeRequest {
                dataset: shared.dataset.clone(),
                consumer: consumer.clone(),
                sequence,
            };
            match timeout(CALL_GUARD, client.acknowledge(ack)).await {
                Ok(Ok(_)) => {
                    shared.record(me, node, Call::Acknowledge, true);
                    log.resent_acks += 1;
                    unacknowledged = None;
                }
                Ok(Err(status)) if is_refusal(&status) => {
                    panic!(
                        "{consumer}: acknowledge refused: {:?} {}",
                        status.code(),
                        status.message()
                    )
                }
                Ok(Err(status)) => {
                    shared.failed(me, node, Call::Acknowledge, Some(&status));
                    continue;
                }
                Err(_) => {
                    shared.failed(me, node, Call::Acknowledge, None);
                    continue;
                }
            }
        }
        let request = pb::SubscribeRequest {
            dataset: shared.dataset.clone(),
            // The consumer's cursor decides where the subscription starts.
            after_sequence: 0,
            consumer: consumer.clone(),
            max_batch: 100,
            purpose: PURPOSE.into(),
            grant_id: String::new(),
        };
        let mut stream = match timeout(CALL_GUARD, client.subscribe(request)).await {
            Ok(Ok(stream)) => stream.into_inner(),
            Ok(Err(status)) if is_refusal(&status) => {
                panic!(
                    "{consumer}: subscribe refused: {:?} {}",
                    status.code(),
                    status.message()
                )
            }
            Ok(Err(status)) => {
                shared.failed(me, node, Call::Subscribe, Some(&status));
                continue;
            }
            Err(_) => {
                shared.failed(me, node, Call::Subscribe, None);
                continue;
            }
        };
        shared.record(me, node, Call::Subscribe, true);
        log.subscriptions[node] += 1;
        loop {
            // Wakes now and then to see whether everything is in.
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
                    shared.failed(me, node, Call::Receive, None);
                    break;
                }
                Err(status) => {
                    shared.failed(me, node, Call::Receive, Some(&status));
                    break;
                }
            };
            shared.record(me, node, Call::Receive, true);
            for change in &batch.changes {
                let s = change.sequence;
                if s <= highest {
                    log.redelivered
                        .push(format!("{s} on node {} (highest seen {highest})", node + 1));
                    continue;
                }
                if s != highest + 1 {
                    log.gaps.push(format!("{s} on node {} after {highest}", node + 1));
                }
                highest = s;
                log.received.push(s);
            }
            shared.followed[f].store(highest, Ordering::SeqCst);
            let ack = pb::AcknowledgeRequest {
                dataset: shared.dataset.clone(),
                consumer: consumer.clone(),
                sequence: highest,
            };
            match timeout(CALL_GUARD, client.acknowledge(ack)).await {
                Ok(Ok(cursor)) => {
                    shared.record(me, node, Call::Acknowledge, true);
                    let at = cursor.into_inner().acknowledged_sequence;
                    assert!(
                        at >= highest,
                        "{consumer}: acknowledged {highest} but the cursor says {at}"
                    );
                }
                Ok(Err(status)) if is_refusal(&status) => {
                    panic!(
                        "{consumer}: acknowledge refused: {:?} {}",
                        status.code(),
                        status.message()
                    )
                }
                Ok(Err(status)) => {
                    shared.failed(me, node, Call::Acknowledge, Some(&status));
                    unacknowledged = Some(highest);
                    break;
                }
                Err(_) => {
                    shared.failed(me, node, Call::Acknowledge, None);
                    unacknowledged = Some(highest);
                    break;
                }
            }
        }
    }
}

/// A restart, as the test saw it.
#[derive(Debug)]
struct Restart {
    node: usize,
    /// From SIGTERM to the node listening again.
    down_from: Instant,
    down_until: Instant,
    /// From SIGTERM to the exit.
    exit_took: Duration,
    /// From the exit until the clients were seen working through the other node.
    failover_took: Duration,
    /// From the start of the process to the node listening again.
    start_took: Duration,
}

/// Waits, at most `BACK_GUARD`, until `done()` holds; `what` names it in the failure.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + BACK_GUARD;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not so within {BACK_GUARD:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// While `down` is down: the publishers publish through the other node, and every follower
/// receives changes there.
async fn wait_for_failover(shared: &Shared, down: usize, since: Instant) {
    let other = 1 - down;
    wait_until(
        &format!("node {} down: publishes through node {}", down + 1, other + 1),
        || shared.served(None, other, Call::Publish, since) >= MIN_CALLS,
    )
    .await;
    for f in 0..FOLLOWERS {
        let client = PUBLISHERS as usize + f;
        wait_until(
            &format!(
                "node {} down: follower {f} receives changes from node {}",
                down + 1,
                other + 1
            ),
            || shared.served(Some(client), other, Call::Receive, since) > 0,
        )
        .await;
    }
}

/// Once `node` is back: the publishers use it again, and the followers have caught up with
/// everything acknowledged so far (they are following again, wherever they are).
async fn wait_for_return(shared: &Shared, node: usize, since: Instant) {
    wait_until(&format!("node {} back: publishes through it", node + 1), || {
        shared.served(None, node, Call::Publish, since) >= MIN_CALLS
    })
    .await;
    let acknowledged = shared.acknowledged.load(Ordering::SeqCst);
    wait_until(
        &format!("node {} back: the followers reach sequence {acknowledged}", node + 1),
        || shared.followed.iter().all(|f| f.load(Ordering::SeqCst) >= acknowledged),
    )
    .await;
}

fn node_config(path: &Path, data_dir: &Path, database_url: &str, pki: &Path) {
    let server = xinqiao_hub::pki::server_files(pki);
    std::fs::write(
        path,
        format!(
            "data_dir = {}\ndatabase_url = '{database_url}'\n\n[tls]\nca = {}\ncert = {}\nkey = {}\n\n\
             [limits]\nshutdown_grace_secs = {SHUTDOWN_GRACE_SECS}\n",
            toml_literal(data_dir),
            toml_literal(&xinqiao_hub::pki::ca_cert_path(pki)),
            toml_literal(&server.cert),
            toml_literal(&server.key),
        ),
    )
    .expect("write a node's configuration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_two_nodes_loses_and_repeats_nothing() {
    let Some(schema) = TestSchema::create("xq_rolling").await else {
        println!("skipping a_rolling_restart_of_two_nodes_loses_and_repeats_nothing: {PG_URL_VAR} is not set");
        return;
    };
    timeout(TEST_GUARD, run(&schema.node_url()))
        .await
        .expect("the rolling restart test finishes in time");
}

async fn run(database_url: &str) {
    let began = Instant::now();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let pki = tmp.path().join("node1").join("pki");
    certs_init(&pki);

    // Node 1 is `serve --dev` (it registers the sample departments and shared schemas), node 2 a
    // plain `serve`; both read their database, PKI and limits from a configuration file.
    let mut args: [Vec<OsString>; 2] = [Vec::new(), Vec::new()];
    for (n, node_args) in args.iter_mut().enumerate() {
        let data = tmp.path().join(format!("node{}", n + 1));
        std::fs::create_dir_all(&data).expect("a node's data directory");
        let config = tmp.path().join(format!("node{}.toml", n + 1));
        node_config(&config, &data, database_url, &pki);
        if n == 0 {
            node_args.push("--dev".into());
        }
        node_args.extend(["--config".into(), config.into()]);
    }
    let ports = [free_port(), free_port()];
    let mut nodes = Vec::new();
    for n in 0..2 {
        let log = tmp.path().join(format!("node{}.log", n + 1));
        nodes.push(HubProcess::start(ports[n], &args[n], &log).await);
    }
    let dataset = open_dataset(ports[0], &pki, "企业登记信息").await;
    let shared = Arc::new(Shared {
        ports,
        pki: pki.clone(),
        dataset: dataset.clone(),
        events: Mutex::default(),
        stop: AtomicBool::new(false),
        target: AtomicU64::new(0),
        acknowledged: AtomicU64::new(0),
        followed: Default::default(),
        internal_errors: Mutex::default(),
    });

    let followers: Vec<_> = (0..FOLLOWERS)
        .map(|f| tokio::spawn(follower(f, shared.clone())))
        .collect();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| tokio::spawn(publisher(p, shared.clone())))
        .collect();
    // Both nodes in use before the first restart.
    for node in 0..2 {
        wait_for_return(&shared, node, began).await;
    }

    let mut restarts = Vec::new();
    for &node in &RESTARTS {
        let hub = &mut nodes[node];
        let down_from = Instant::now();
        let (status, exit_took) = hub
            .terminate_within(EXIT_GUARD)
            .await
            .unwrap_or_else(|e| panic!("node {}: {e}\n{}", node + 1, hub.log_text()));
        assert!(
            status.success(),
            "node {} exited with {status} after SIGTERM:\n{}",
            node + 1,
            hub.log_text()
        );
        assert!(
            exit_took < STOP_PROMPTLY,
            "node {} took {exit_took:?} to stop: live streams held the graceful stop",
            node + 1
        );
        let exited = Instant::now();
        // The clients move to the other node while this one is down.
        wait_for_failover(&shared, node, down_from).await;
        let starting = Instant::now();
        hub.restart().await;
        let down_until = Instant::now();
        restarts.push(Restart {
            node,
            down_from,
            down_until,
            exit_took,
            failover_took: starting - exited,
            start_took: down_until - starting,
        });
        // A rolling restart takes the next node down only once this one serves again.
        wait_for_return(&shared, node, down_until).await;
    }
    shared.stop.store(true, Ordering::SeqCst);

    let mut logs = Vec::new();
    for (p, publisher) in publishers.into_iter().enumerate() {
        logs.push(publisher.await.unwrap_or_else(|e| panic!("publisher {p}: {e}")));
    }
    let batches: u64 = logs.iter().map(|l| l.acked.len() as u64).sum();
    let total = batches * BATCH;
    shared.target.store(total, Ordering::SeqCst);
    let mut followed = Vec::new();
    for (f, follower) in followers.into_iter().enumerate() {
        followed.push(follower.await.unwrap_or_else(|e| panic!("follower {f}: {e}")));
    }

    // The log: 1..N, each acknowledged batch exactly once and where its acknowledgement said.
    let mut reader = exchange_when_up(ports[1], &pki, POLICE).await;
    let changes = fetch_all(&mut reader, &dataset).await;
    assert!(
        changes.iter().map(|c| c.sequence).eq(1..=total),
        "the log holds sequences 1..{total}: {} changes, first {:?}, last {:?}",
        changes.len(),
        changes.first().map(|c| c.sequence),
        changes.last().map(|c| c.sequence)
    );
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for change in &changes {
        seen.entry(name_of(change)).or_default().push(change.sequence);
    }
    for (p, log) in logs.iter().enumerate() {
        let p = p as u64;
        assert!(
            (0..log.acked.len() as u64).all(|b| log.acked.contains_key(&b)),
            "publisher {p}: batches acknowledged in order"
        );
        for (b, (first, last)) in &log.acked {
            assert_eq!(last - first + 1, BATCH);
            for i in 0..BATCH {
                let name = batch_name(p, *b, i);
                assert_eq!(
                    seen.get(&name).map(Vec::as_slice),
                    Some(&[first + i][..]),
                    "{name}: exactly once, at the sequence its batch's acknowledgement gave"
                );
            }
        }
    }
    assert_eq!(seen.len() as u64, total, "no record that was not acknowledged");

    // The followers: every change once, in order, nothing skipped, and their cursors at the end.
    for (f, log) in followed.iter().enumerate() {
        assert!(
            log.redelivered.is_empty(),
            "follower {f} saw changes twice: {:?}",
            log.redelivered
        );
        assert!(log.gaps.is_empty(), "follower {f} skipped changes: {:?}", log.gaps);
        assert!(
            log.received.iter().copied().eq(1..=total),
            "follower {f} saw 1..{total} in order: {} changes, first {:?}, last {:?}",
            log.received.len(),
            log.received.first(),
            log.received.last()
        );
        let (code, consumer) = follower_identity(f);
        let mut client = exchange_when_up(ports[f % 2], &pki, code).await;
        let cursor = ok(client
            .get_consumer(pb::GetConsumerRequest {
                dataset: dataset.clone(),
                consumer,
            })
            .await);
        assert_eq!(cursor.acknowledged_sequence, total, "follower {f}'s cursor");
    }

    // Each restart: the other node kept serving the clients while this one was down.
    let events = std::mem::take(&mut *shared.events.lock().expect("events"));
    let mut windows = Vec::new();
    for r in &restarts {
        let during = |e: &&Event| e.at >= r.down_from && e.at <= r.down_until;
        let served_by_other = events
            .iter()
            .filter(during)
            .filter(|e| e.ok && e.node != r.node)
            .count();
        let failed_on_down = events
            .iter()
            .filter(during)
            .filter(|e| !e.ok && e.node == r.node)
            .count();
        assert!(
            served_by_other > 0,
            "no call succeeded on node {} while node {} restarted ({:?}): {} calls failed on it",
            2 - r.node,
            r.node + 1,
            r.down_until - r.down_from,
            failed_on_down
        );
        windows.push(format!(
            "node {} down {:.2} s (exit {:.2} s, failover seen {:.2} s, start {:.2} s): {served_by_other} calls served by node {}, \
             {failed_on_down} failed on node {}",
            r.node + 1,
            (r.down_until - r.down_from).as_secs_f64(),
            r.exit_took.as_secs_f64(),
            r.failover_took.as_secs_f64(),
            r.start_took.as_secs_f64(),
            2 - r.node,
            r.node + 1
        ));
    }
    for (n, node) in nodes.iter().enumerate() {
        let log = node.log_text();
        assert!(!log.contains("panicked"), "node {} panicked:\n{log}", n + 1);
    }
    let internal = shared.internal_errors.lock().expect("errors").clone();
    assert!(internal.is_empty(), "the hubs reported internal errors: {internal:#?}");

    println!(
        "rolling restart: {} restarts in {:.1} s; {batches} batches, {total} records; publishers: {} retries, {} \
         replayed acknowledgements; followers: subscriptions {:?}, {} acknowledgements resent; {}",
        restarts.len(),
        began.elapsed().as_secs_f64(),
        logs.iter().map(|l| l.retries).sum::<u64>(),
        logs.iter().map(|l| l.replayed).sum::<u64>(),
        followed.iter().map(|l| l.subscriptions).collect::<Vec<_>>(),
        followed.iter().map(|l| l.resent_acks).sum::<u64>(),
        windows.join("; ")
    );
    for node in &mut nodes {
        node.kill();
    }
}
