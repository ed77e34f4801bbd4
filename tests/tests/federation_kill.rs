//! The city hub killed mid-stream (issue #11, Done when): no stop runs — its runtime is shut
//! down as a SIGKILL would end its process, connections dropped under its peers — while the
//! county keeps publishing. Restarted on its port and database, the province's follower, a
//! consumer resuming from the cursor it acknowledged, gets every record exactly once, in order.

use std::time::{Duration, Instant};

use tonic::Code;
use xinqiao_tests::federation::*;
use xinqiao_tests::*;

on_each_backend!(the_city_killed_mid_stream_loses_and_repeats_nothing);

/// Records the county publishes in all, one batch each.
const LAST: u32 = 40;
/// The record after which the city is killed.
const KILL_AFTER: u64 = 10;

/// Acknowledges `sequence` through the chain, once.
async fn acknowledge(exchange: &mut Exchange, code: &str, sequence: u64) -> Result<(), tonic::Status> {
    let request = v1::AcknowledgeRequest {
        dataset: code.into(),
        consumer: "relief".into(),
        sequence,
    };
    let cursor = exchange.acknowledge(request).await?.into_inner();
    assert_eq!(cursor.acknowledged_sequence, sequence);
    Ok(())
}

/// The consumer's stream, opened again until the chain answers.
async fn followed(exchange: &mut Exchange, code: &str) -> tonic::Streaming<v1::ChangeBatch> {
    let started = Instant::now();
    loop {
        let request = v1::SubscribeRequest {
            consumer: "relief".into(),
            ..subscribe_as(code, 0, "", "")
        };
        match exchange.subscribe(request).await {
            Ok(stream) => return stream.into_inner(),
            Err(status) => {
                assert!(started.elapsed() < PROPAGATION, "the chain never came back: {status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn the_city_killed_mid_stream_loses_and_repeats_nothing(backend: Backend) {
    let (county, mut city, province) = chain_with_killable_city(&backend).await;
    let me = province_department();
    let code = county_residents(&county).await;
    until_aggregated(&province, &code).await;
    let request = ok(Access::new(province.as_dept(&me).await)
        .request_access(request_access(application(&code, &["resident_id", "name"])))
        .await);
    ok(Access::new(county.as_dept(SAMR).await)
        .approve_request(v1::ApproveRequestRequest {
            request_id: request.request_id,
            ..approval(&[], &[])
        })
        .await);

    // The county keeps publishing, one record at a time, through the kill and the restart.
    let publisher = {
        let channel = county.as_dept(SAMR).await;
        let code = code.clone();
        tokio::spawn(async move {
            let mut exchange = Exchange::new(channel);
            for serial in 4..=LAST {
                let change = upsert_resident(serial, &format!("张{serial}"));
                ok(exchange
                    .publish(batch(&code, &format!("k{serial}"), vec![change]))
                    .await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut exchange = Exchange::new(province.as_dept(&me).await);
    let mut received: Vec<u64> = Vec::new();
    let mut stream = followed(&mut exchange, &code).await;
    let (mut killed, mut restarted) = (false, false);
    let mut broken = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    while received.last() != Some(&u64::from(LAST)) {
        assert!(Instant::now() < deadline, "stalled after {received:?}");
        match next(&mut stream).await {
            Ok(Some(batch)) => {
                received.extend(batch.changes.iter().map(|c| c.sequence));
                let last = *received.last().expect("a batch has changes");
                // A consumer commits what it has processed before it reads on, again until
                // the chain answers.
                while let Err(status) = acknowledge(&mut exchange, &code, last).await {
                    assert!(killed, "refused before the kill: {status:?}");
                    assert!(
                        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
                        "{status:?}"
                    );
                    assert!(Instant::now() < deadline, "the chain never came back: {status:?}");
                    if !restarted {
                        city.run().await;
                        restarted = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if !killed && last >= KILL_AFTER {
                    city.kill();
                    killed = true;
                }
            }
            Ok(None) => panic!("the relayed stream ended without a status"),
            Err(status) => {
                assert!(killed, "broke before the kill: {status:?}");
                broken.get_or_insert(status);
                // Restarted on its port and database, the city relays again; the consumer
                // resumes after the cursor it acknowledged.
                if !restarted {
                    city.run().await;
                    restarted = true;
                }
                stream = followed(&mut exchange, &code).await;
            }
        }
    }
    let broken = broken.expect("the kill broke the stream");
    assert_eq!(broken.code(), Code::Unavailable, "{broken:?}");
    assert!(broken.message().contains(CITY), "names the city: {broken:?}");
    assert_eq!(
        received,
        (1..=u64::from(LAST)).collect::<Vec<_>>(),
        "every record once, in order"
    );
    publisher.await.expect("the county published throughout");
    let cursor = county
        .store()
        .get_consumer(&code, &me, "relief")
        .await
        .expect("read the cursor")
        .expect("kept on the county");
    assert_eq!(cursor.acknowledged, u64::from(LAST));

    county.finish().await;
    city.finish().await;
    province.finish().await;
}
