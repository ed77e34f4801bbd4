//! Crash safety of the exchange on SQLite: a hub process killed with SIGKILL at random moments
//! while a publisher and a named consumer keep retrying. Afterwards the dataset holds every
//! acknowledged batch exactly once, with gap-free sequence numbers, and the consumer has seen
//! every change (some more than once: delivery is at least once after a crash).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::time::timeout;
use xinqiao_proto::v1 as pb;

/// Times the hub is killed and restarted.
const ROUNDS: u64 = 6;
/// The publisher goes on until every round is done and at least this many batches are in.
const MIN_BATCHES: u64 = 40;
const BATCH: u64 = 200;
const CONSUMER: &str = "crash-consumer";
/// Failure guards: a single call, and the whole test.
const CALL_GUARD: Duration = Duration::from_secs(30);
const TEST_GUARD: Duration = Duration::from_secs(600);

/// Between 200 and 1500 ms, from a fixed seed and the round number.
fn kill_delay(round: u64) -> Duration {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ round.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    Duration::from_millis(200 + x % 1301)
}

/// What the publisher learnt about one batch: the sequences the hub gave it.
#[derive(Debug, Clone, Copy)]
struct Acked {
    first: u64,
    last: u64,
}

#[derive(Default)]
struct PublisherLog {
    acked: HashMap<u64, Acked>,
    /// Acknowledgements that answered a retry of a batch committed before a crash.
    replayed: u64,
    /// Attempts that did not get through (the hub was down or died mid-call).
    retries: u64,
    hub_internal_errors: Vec<String>,
}

fn batch_request(dataset: &str, b: u64) -> pb::PublishRequest {
    let changes = (0..BATCH)
        .map(|i| upsert(record(b * BATCH + i, &format!("crash-{b}-{i}"))))
        .collect();
    publish_request(dataset, &format!("crash-{b}"), changes)
}

/// Publishes batch `b` until the hub acknowledges it, reconnecting as needed.
async fn publish_until_acknowledged(
    port: u16,
    pki: &std::path::Path,
    client: &mut Option<Exchange>,
    dataset: &str,
    b: u64,
    log: &Mutex<PublisherLog>,
) {
    let request = batch_request(dataset, b);
    loop {
        let mut connected = match client.take() {
            Some(c) => c,
            None => match exchange(port, pki, SAMR).await {
                Ok(c) => c,
                Err(_) => {
                    log.lock().expect("log").retries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match timeout(CALL_GUARD, connected.publish(request.clone())).await {
            Ok(Ok(answer)) => {
                let answer = answer.into_inner();
                assert_eq!(
                    (answer.accepted as u64, answer.rejected.len()),
                    (BATCH, 0),
                    "batch {b}: {answer:?}"
                );
                assert_eq!(answer.last_sequence - answer.first_sequence + 1, BATCH, "batch {b}");
                let mut log = log.lock().expect("log");
                if answer.replayed {
                    log.replayed += 1;
                }
                log.acked.insert(
                    b,
                    Acked {
                        first: answer.first_sequence,
                        last: answer.last_sequence,
                    },
                );
                *client = Some(connected);
                return;
            }
            Ok(Err(status)) if is_refusal(&status) => {
                panic!("batch {b} refused: {:?} {}", status.code(), status.message())
            }
            Ok(Err(status)) => {
                let mut log = log.lock().expect("log");
                log.retries += 1;
                if is_hub_internal_error(&status) {
                    log.hub_internal_errors
                        .push(format!("publish batch {b}: {}", status.message()));
                }
            }
            Err(_) => log.lock().expect("log").retries += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Default)]
struct ConsumerLog {
    /// Every sequence number received, in arrival order, redeliveries included.
    received: Vec<u64>,
    subscriptions: u64,
    /// Where a subscription started against what had been received before (gaps are violations).
    violations: Vec<String>,
    hub_internal_errors: Vec<String>,
}

/// Follows the dataset as a named consumer, acknowledging each message, resubscribing after any
/// failure, until it has seen sequence `target` (set once the publisher is done).
async fn consume(port: u16, pki: std::path::PathBuf, dataset: String, target: Arc<AtomicU64>) -> ConsumerLog {
    let mut log = ConsumerLog::default();
    let mut highest = 0u64;
    let caught_up = |highest: u64| {
        let t = target.load(Ordering::SeqCst);
        t > 0 && highest >= t
    };
    'sessions: loop {
        if caught_up(highest) {
            return log;
        }
        let Ok(mut client) = exchange(port, &pki, POLICE).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let request = pb::SubscribeRequest {
            dataset: dataset.clone(),
            after_sequence: 0,
            consumer: CONSUMER.into(),
            max_batch: 150,
            purpose: PURPOSE.into(),
            grant_id: String::new(),
        };
        let mut stream = match timeout(CALL_GUARD, client.subscribe(request)).await {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(status)) if is_refusal(&status) => {
                panic!("subscribe refused: {:?} {}", status.code(), status.message())
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        log.subscriptions += 1;
        let mut previous: Option<u64> = None;
        loop {
            // Wakes now and then to see whether the publisher has finished and all is in.
            let message = tokio::select! {
                m = stream.message() => m,
                () = tokio::time::sleep(Duration::from_millis(250)) => {
                    if caught_up(highest) {
                        return log;
                    }
                    continue;
                }
            };
            let batch = match message {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    log.violations.push(format!(
                        "subscription {} ended without an error after {previous:?}",
                        log.subscriptions
                    ));
                    continue 'sessions;
                }
                Err(status) => {
                    if is_hub_internal_error(&status) {
                        log.hub_internal_errors.push(format!("subscribe: {}", status.message()));
                    }
                    continue 'sessions;
                }
            };
            for change in &batch.changes {
                let expected = match previous {
                    Some(p) => p + 1,
                    // A new subscription resumes at or before the first change not yet seen.
                    None if change.sequence <= highest + 1 => change.sequence,
                    None => highest + 1,
                };
                if change.sequence != expected {
                    log.violations.push(format!(
                        "subscription {}: got {} where {expected} was due (highest seen {highest})",
                        log.subscriptions, change.sequence
                    ));
                }
                previous = Some(change.sequence);
                highest = highest.max(change.sequence);
                log.received.push(change.sequence);
            }
            let Some(last) = batch.changes.last() else {
                log.violations.push("an empty subscription message".into());
                continue;
            };
            let ack = pb::AcknowledgeRequest {
                dataset: dataset.clone(),
                consumer: CONSUMER.into(),
                sequence: last.sequence,
            };
            match timeout(CALL_GUARD, client.acknowledge(ack)).await {
                Ok(Ok(cursor)) => {
                    let at = cursor.into_inner().acknowledged_sequence;
                    if at < last.sequence {
                        log.violations
                            .push(format!("acknowledged {} but the cursor says {at}", last.sequence));
                    }
                }
                Ok(Err(status)) if is_refusal(&status) => {
                    panic!("acknowledge refused: {:?} {}", status.code(), status.message())
                }
                _ => continue 'sessions,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_hubs_lose_no_acknowledged_batch_and_no_change() {
    timeout(TEST_GUARD, run()).await.expect("the crash test finishes");
}

async fn run() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let data = tmp.path().join("data");
    let port = free_port();
    let mut hub = HubProcess::dev(&data, port).await;
    let pki = data.join("pki");
    let dataset = open_dataset(port, &pki, "企业登记信息").await;

    let target = Arc::new(AtomicU64::new(0));
    let consumer = tokio::spawn(consume(port, pki.clone(), dataset.clone(), target.clone()));

    let rounds_done = Arc::new(AtomicBool::new(false));
    let publisher_log = Arc::new(Mutex::new(PublisherLog::default()));
    let publisher = {
        let (pki, dataset, rounds_done, log) =
            (pki.clone(), dataset.clone(), rounds_done.clone(), publisher_log.clone());
        tokio::spawn(async move {
            let mut client = None;
            let mut b = 0;
            while !(rounds_done.load(Ordering::SeqCst) && b >= MIN_BATCHES) {
                publish_until_acknowledged(port, &pki, &mut client, &dataset, b, &log).await;
                b += 1;
            }
            b
        })
    };

    let mut killed_after = Vec::new();
    for round in 0..ROUNDS {
        let delay = kill_delay(round);
        tokio::time::sleep(delay).await;
        let acked_before = publisher_log.lock().expect("log").acked.len();
        hub.kill();
        killed_after.push((delay.as_millis(), acked_before));
        tokio::time::sleep(Duration::from_millis(100)).await;
        hub.restart().await;
    }
    rounds_done.store(true, Ordering::SeqCst);
    let batches = publisher.await.expect("the publisher");
    let total = batches * BATCH;
    target.store(total, Ordering::SeqCst);
    let consumed = consumer.await.expect("the consumer");

    // The log: exactly 1..N, and each acknowledged batch's records exactly once, where the
    // acknowledgement said.
    let mut reader = exchange_when_up(port, &pki, POLICE).await;
    let changes = fetch_all(&mut reader, &dataset).await;
    let sequences: Vec<u64> = changes.iter().map(|c| c.sequence).collect();
    assert_eq!(sequences.len() as u64, total, "one change per record published");
    assert!(
        sequences.iter().copied().eq(1..=total),
        "sequence numbers are 1..{total} without gaps"
    );
    let mut seen: HashMap<String, (u64, u32)> = HashMap::new();
    for change in &changes {
        let entry = seen.entry(name_of(change)).or_insert((change.sequence, 0));
        entry.1 += 1;
    }
    let publisher_log = std::mem::take(&mut *publisher_log.lock().expect("log"));
    assert_eq!(publisher_log.acked.len() as u64, batches);
    for b in 0..batches {
        let acked = publisher_log.acked[&b];
        let present: Vec<u64> = (0..BATCH)
            .filter_map(|i| seen.get(&format!("crash-{b}-{i}")).map(|(_, n)| *n as u64))
            .collect();
        assert_eq!(
            (present.len() as u64, present.iter().sum::<u64>()),
            (BATCH, BATCH),
            "batch {b}: every record exactly once, no partial batch"
        );
        for i in 0..BATCH {
            let (sequence, _) = seen[&format!("crash-{b}-{i}")];
            assert_eq!(
                sequence,
                acked.first + i,
                "batch {b} record {i} sits where the acknowledgement said"
            );
        }
        assert_eq!(acked.last, acked.first + BATCH - 1);
    }
    assert_eq!(seen.len() as u64, total, "no record that was not published");

    let mut samr = exchange_when_up(port, &pki, SAMR).await;
    let d = ok(samr
        .get_dataset(pb::GetDatasetRequest {
            dataset: dataset.clone(),
        })
        .await);
    assert_eq!((d.record_count, d.last_sequence), (total, total));

    // The consumer: every change, in order within each subscription, none skipped.
    assert!(consumed.violations.is_empty(), "consumer: {:#?}", consumed.violations);
    let mut distinct = consumed.received.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.iter().copied().eq(1..=total),
        "the consumer saw 1..{total} (deduplicated): {} distinct, first {:?}, last {:?}",
        distinct.len(),
        distinct.first(),
        distinct.last()
    );
    let redeliveries = consumed.received.len() - distinct.len();
    let cursor = ok(reader
        .get_consumer(pb::GetConsumerRequest {
            dataset: dataset.clone(),
            consumer: CONSUMER.into(),
        })
        .await);
    assert_eq!(
        cursor.acknowledged_sequence, total,
        "the consumer acknowledged everything"
    );

    let internal: Vec<&String> = publisher_log
        .hub_internal_errors
        .iter()
        .chain(&consumed.hub_internal_errors)
        .collect();
    assert!(internal.is_empty(), "the hub reported internal errors: {internal:#?}");

    println!(
        "crash test: {ROUNDS} rounds (SIGKILL after {}), {} hub starts, {batches} batches, {total} records, \
         {} publish attempts retried, {} acknowledgements were replays, {} subscriptions, {redeliveries} redeliveries",
        killed_after
            .iter()
            .map(|(ms, acked)| format!("{ms} ms [{acked} batches in]"))
            .collect::<Vec<_>>()
            .join(", "),
        hub.starts,
        publisher_log.retries,
        publisher_log.replayed,
        consumed.subscriptions,
    );
    hub.kill();
}
