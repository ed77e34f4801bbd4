//! Bounded memory: a hub process (SQLite) takes a large load through PublishStream and then
//! streams all of it to one subscriber, while the test samples the hub's resident set size. What
//! is asserted is a memory bound, not a time.

mod support;

use std::time::Duration;

use support::*;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use xinqiao_proto::v1 as pb;

const RECORDS: u64 = 1_000_000;
const BATCH: u64 = 5_000;
const SAMPLE_EVERY: u64 = 100_000;
/// Allowed growth of the hub's RSS from the 200,000th change delivered to the last.
const GROWTH_BOUND_KIB: u64 = 64 * 1024;
/// A failure guard only.
const TEST_GUARD: Duration = Duration::from_secs(1800);

/// A legal-entity record of about 200 bytes.
fn record(serial: u64) -> Vec<u8> {
    serde_json::json!({
        "uscc": uscc(serial),
        "name": format!("m-{serial}"),
        "legal_representative": "王五",
        "established_on": "2018-05-20",
        "status": "存续",
        "address": "浙江省杭州市上城区解放东路100号市民中心",
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hub_streams_a_million_records_in_bounded_memory() {
    timeout(TEST_GUARD, run()).await.expect("the memory test finishes");
}

async fn run() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let data = tmp.path().join("data");
    let mut hub = HubProcess::dev(&data, free_port()).await;
    let pki = data.join("pki");
    let dataset = open_dataset(hub.port, &pki, "企业登记信息").await;
    let pid = hub.pid();
    let started = std::time::Instant::now();
    let at_start = rss_kib(pid);
    println!("record size: {} bytes", record(0).len());

    // Load through one PublishStream, each batch acknowledged in order.
    let mut samr = exchange_when_up(hub.port, &pki, SAMR).await;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let producer = {
        let dataset = dataset.clone();
        tokio::spawn(async move {
            for b in 0..RECORDS / BATCH {
                let changes = (b * BATCH..(b + 1) * BATCH).map(|s| upsert(record(s))).collect();
                if tx
                    .send(publish_request(&dataset, &format!("load-{b}"), changes))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    let mut answers = ok(samr.publish_stream(ReceiverStream::new(rx)).await);
    for b in 0..RECORDS / BATCH {
        let answer = answers
            .message()
            .await
            .unwrap_or_else(|s| panic!("batch {b}: {:?} {}", s.code(), s.message()))
            .unwrap_or_else(|| panic!("the stream ended before batch {b}"));
        assert_eq!(
            (answer.accepted as u64, answer.first_sequence, answer.last_sequence),
            (BATCH, b * BATCH + 1, (b + 1) * BATCH),
            "batch {b}"
        );
    }
    producer.await.expect("producer");
    drop(answers);
    let after_load = rss_kib(pid);
    let loaded_in = started.elapsed();

    // Drain with one subscription, sampling the hub's RSS every 100,000 changes.
    let mut police = exchange_when_up(hub.port, &pki, POLICE).await;
    let mut stream = ok(police
        .subscribe(pb::SubscribeRequest {
            dataset: dataset.clone(),
            after_sequence: 0,
            consumer: String::new(),
            max_batch: 1000,
            purpose: PURPOSE.into(),
            grant_id: String::new(),
        })
        .await);
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut received = 0u64;
    while received < RECORDS {
        let batch = match stream.message().await {
            Ok(Some(batch)) => batch,
            Ok(None) => panic!("the subscription ended after {received} changes"),
            Err(s) => panic!(
                "the subscription failed after {received}: {:?} {}",
                s.code(),
                s.message()
            ),
        };
        assert!(batch.changes.len() <= 1000, "max_batch is respected");
        for change in &batch.changes {
            assert_eq!(change.sequence, received + 1, "in order, without gaps");
            if change.sequence.is_multiple_of(997) {
                assert_eq!(name_of(change), format!("m-{received}"));
            }
            received += 1;
            if received.is_multiple_of(SAMPLE_EVERY) {
                samples.push((received, rss_kib(pid)));
            }
        }
    }
    let drained_in = started.elapsed() - loaded_in;

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "memory: hub RSS {:.1} MiB at start, {:.1} MiB after loading {RECORDS} records ({:.0?}); drained in {:.0?}",
        mib(at_start),
        mib(after_load),
        loaded_in,
        drained_in
    );
    for (at, kib) in &samples {
        println!("memory: {at:>8} changes delivered: hub RSS {:.1} MiB", mib(*kib));
    }
    let base = samples
        .iter()
        .find(|(at, _)| *at == 200_000)
        .expect("a sample at 200,000")
        .1;
    let last = samples.last().expect("samples").1;
    let growth = last.saturating_sub(base);
    println!(
        "memory: growth from 200,000 to {RECORDS}: {:.1} MiB (bound {:.0} MiB)",
        mib(growth),
        mib(GROWTH_BOUND_KIB)
    );
    assert!(
        growth < GROWTH_BOUND_KIB,
        "the hub's RSS grew by {:.1} MiB while streaming: {samples:?}",
        mib(growth)
    );
    hub.kill();
}
