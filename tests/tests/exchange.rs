//! Every ExchangeService RPC doing its job: datasets, publishing, fetching, snapshots, live
//! subscriptions, named consumers, read permissions, the exchange catalogue and files.
//!
//! Timeouts below only keep a broken hub from hanging the suite; nothing asserts how fast
//! anything is.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};
use xinqiao_tests::v1 as pb;
use xinqiao_tests::*;

on_each_backend!(
    datasets_are_opened_by_the_provider_for_published_entries,
    a_valid_batch_gets_consecutive_sequences,
    reject_all_stores_nothing_when_one_record_is_bad,
    accept_valid_stores_the_valid_records_and_reports_each_rejected_one,
    a_retried_batch_is_replayed_and_writes_nothing,
    deletes_remove_keys_and_the_record_count_follows,
    only_the_provider_publishes,
    batch_and_record_limits_are_enforced,
    publish_stream_acknowledges_each_batch_in_order,
    fetch_pages_by_limit_and_cursor,
    snapshots_hold_the_latest_version_of_each_present_key,
    snapshots_agree_with_the_log_at_every_sequence,
    large_snapshots_stream_in_key_ordered_chunks,
    subscribe_delivers_live_changes_in_order_without_gaps,
    concurrent_publishers_never_make_a_follower_skip_a_sequence,
    named_consumers_resume_after_their_acknowledged_position,
    share_types_decide_who_reads,
    the_exchange_catalogue_shows_standing_and_filters,
    a_subscriber_that_does_not_read_holds_up_nothing_and_misses_nothing,
    files_upload_in_resumable_pieces_and_download_verified,
    file_uploads_are_checked,
    graceful_stop_ends_live_subscriptions_with_unavailable,
    graceful_stop_is_not_held_up_by_a_subscriber_that_stopped_reading,
    a_subscription_cut_off_by_a_stop_ends_with_unavailable,
);

/// How long a test waits for something that should happen promptly before calling the hub broken.
const GUARD: Duration = Duration::from_secs(60);

fn enterprise() -> pb::EntryContent {
    content("企业登记信息", "102001", "本市登记注册企业的营业执照信息")
}

/// The next message of a subscription, which must come.
async fn next_batch(stream: &mut Streaming<pb::ChangeBatch>) -> pb::ChangeBatch {
    match timeout(GUARD, stream.message()).await {
        Ok(Ok(Some(batch))) => batch,
        Ok(Ok(None)) => panic!("the subscription ended"),
        Ok(Err(status)) => panic!("the subscription failed: {:?} {}", status.code(), status.message()),
        Err(_) => panic!("nothing arrived on the subscription within {GUARD:?}"),
    }
}

/// Reads messages until `count` changes have arrived; returns them and the size of each message.
async fn receive(stream: &mut Streaming<pb::ChangeBatch>, count: usize) -> (Vec<pb::Change>, Vec<usize>) {
    let mut changes = Vec::new();
    let mut sizes = Vec::new();
    while changes.len() < count {
        let batch = next_batch(stream).await;
        assert!(!batch.changes.is_empty(), "a subscription message carries changes");
        sizes.push(batch.changes.len());
        changes.extend(batch.changes);
    }
    assert_eq!(changes.len(), count, "more changes arrived than were published");
    (changes, sizes)
}

/// Declares [`PURPOSE`], as a department reading another's open dataset must.
fn subscribe(dataset: &str, after_sequence: u64, consumer: &str, max_batch: u32) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        dataset: dataset.into(),
        after_sequence,
        consumer: consumer.into(),
        max_batch,
        purpose: PURPOSE.into(),
        grant_id: String::new(),
    }
}

fn acknowledge(dataset: &str, consumer: &str, sequence: u64) -> pb::AcknowledgeRequest {
    pb::AcknowledgeRequest {
        dataset: dataset.into(),
        consumer: consumer.into(),
        sequence,
    }
}

/// Declares [`PURPOSE`], as a department reading another's open dataset must.
fn snapshot(dataset: &str, as_of_sequence: u64) -> pb::SnapshotRequest {
    pb::SnapshotRequest {
        dataset: dataset.into(),
        as_of_sequence,
        purpose: PURPOSE.into(),
        grant_id: String::new(),
    }
}

/// A whole snapshot: the sequence it is taken at and its records, chunk by chunk.
async fn read_snapshot(client: &mut Exchange, dataset: &str, as_of: u64) -> (u64, Vec<Vec<pb::Change>>) {
    let mut stream = ok(client.snapshot(snapshot(dataset, as_of)).await);
    let mut taken_at = None;
    let mut chunks = Vec::new();
    loop {
        let chunk = match timeout(GUARD, stream.message()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(status)) => panic!("the snapshot failed: {:?} {}", status.code(), status.message()),
            Err(_) => panic!("the snapshot stalled"),
        };
        let at = *taken_at.get_or_insert(chunk.as_of_sequence);
        assert_eq!(chunk.as_of_sequence, at, "every chunk names the same sequence");
        chunks.push(chunk.records);
    }
    (taken_at.expect("a snapshot has at least one chunk"), chunks)
}

/// The records of a snapshot, flattened.
async fn snapshot_records(client: &mut Exchange, dataset: &str, as_of: u64) -> (u64, Vec<pb::Change>) {
    let (at, chunks) = read_snapshot(client, dataset, as_of).await;
    (at, chunks.into_iter().flatten().collect())
}

fn names(changes: &[pb::Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| record_of(c)["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn dataset_of(client_answer: pb::Dataset) -> (u64, u64) {
    (client_answer.record_count, client_answer.last_sequence)
}

// ---------------------------------------------------------------------------------------------
// Datasets

async fn datasets_are_opened_by_the_provider_for_published_entries(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let mut samr_dir = hub.dept(SAMR).await;
    let mut samr = hub.exchange(SAMR).await;
    let mut police = hub.exchange(POLICE).await;

    // A draft is not exchanged; nor is an entry under review.
    let code = ok(samr_dir.create_entry(create(enterprise())).await).resource_code;
    let status = refused(
        samr.create_dataset(table_dataset(&code, &["uscc"])).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("待提交"), "{}", status.message());
    ok(samr_dir.submit_entry(submit(&code)).await);
    refused(
        samr.create_dataset(table_dataset(&code, &["uscc"])).await,
        Code::FailedPrecondition,
    );
    ok(hub.admin().await.publish_entry(publish(&code)).await);

    // Only the provider opens it: not another department, not the admin.
    refused(
        police.create_dataset(table_dataset(&code, &["uscc"])).await,
        Code::PermissionDenied,
    );
    refused(
        hub.exchange_admin()
            .await
            .create_dataset(table_dataset(&code, &["uscc"]))
            .await,
        Code::PermissionDenied,
    );

    // The key must be properties the schema requires.
    invalid(samr.create_dataset(table_dataset(&code, &[])).await, &["key"]);
    invalid(
        samr.create_dataset(table_dataset(&code, &["address"])).await,
        &["key[0]"],
    );
    invalid(samr.create_dataset(table_dataset(&code, &["nope"])).await, &["key[0]"]);
    invalid(
        samr.create_dataset(table_dataset(&code, &["uscc", "uscc"])).await,
        &["key[1]"],
    );
    // A table dataset needs a schema: none named and none bound.
    invalid(
        samr.create_dataset(pb::CreateDatasetRequest {
            dataset: code.clone(),
            key: vec!["uscc".into()],
            ..Default::default()
        })
        .await,
        &["schema_subject"],
    );
    refused(
        samr.create_dataset(pb::CreateDatasetRequest {
            schema_subject: "no-such-subject".into(),
            ..table_dataset(&code, &["uscc"])
        })
        .await,
        Code::NotFound,
    );
    refused(
        samr.create_dataset(table_dataset("102001/999999", &["uscc"])).await,
        Code::NotFound,
    );

    let dataset = ok(samr.create_dataset(table_dataset(&code, &["uscc"])).await);
    assert_eq!(dataset.dataset, code);
    assert_eq!(dataset.name, "企业登记信息");
    assert_eq!(dataset.provider_code, SAMR);
    assert_eq!(dataset.provider_name, "市市场监督管理局");
    assert_eq!(dataset.kind, pb::DatasetKind::Table as i32);
    assert_eq!(
        (dataset.schema_subject.as_str(), dataset.schema_version),
        (LEGAL_ENTITY, 1)
    );
    assert_eq!(dataset.key, ["uscc"]);
    assert_eq!(dataset_of(dataset.clone()), (0, 0));
    assert_eq!(dataset.last_published_at, None);
    assert!(dataset.created_at.is_some());
    assert_eq!(dataset.standing, pb::Standing::Owner as i32);

    let status = refused(
        samr.create_dataset(table_dataset(&code, &["uscc"])).await,
        Code::AlreadyExists,
    );
    assert!(status.message().contains(&code), "{}", status.message());

    // Another department reads it with its own standing.
    let seen = ok(police.get_dataset(get_dataset(&code)).await);
    assert_eq!(seen.standing, pb::Standing::Open as i32);
    assert_eq!((seen.dataset, seen.key), (code.clone(), dataset.key.clone()));

    // A schema that does not cover the entry's data items (信息项).
    let mut uncovered = enterprise();
    uncovered.name = "企业注册号信息".into();
    uncovered.items.push(item("注册号", "字符型", 15));
    let uncovered = hub.published_entry(SAMR, uncovered).await;
    let status = refused(
        samr.create_dataset(table_dataset(&uncovered, &["uscc"])).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("注册号"), "{}", status.message());

    // An entry shared through a service interface (接口) is not a dataset.
    let interface = hub
        .published_entry(
            SAMR,
            shared_as(
                content("企业信用查询", "102001", "接口方式共享"),
                pb::ShareType::Unconditional,
                pb::ExchangeKind::Interface,
            ),
        )
        .await;
    let status = refused(
        samr.create_dataset(table_dataset(&interface, &["uscc"])).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("接口"), "{}", status.message());

    // A file dataset has neither schema nor key.
    let files = hub
        .published_entry(SAMR, files_entry(content("企业年报扫描件", "102001", "年报文件")))
        .await;
    invalid(
        samr.create_dataset(table_dataset(&files, &["uscc"])).await,
        &["schema_subject"],
    );
    let file_set = ok(samr.create_dataset(file_dataset(&files)).await);
    assert_eq!(file_set.kind, pb::DatasetKind::File as i32);
    assert_eq!((file_set.schema_subject.as_str(), file_set.key.len()), ("", 0));

    // A draft's dataset does not exist yet for anyone; another department's draft is not disclosed.
    let draft = ok(samr_dir.create_entry(create(content("草稿", "102001", "未发布"))).await).resource_code;
    refused(police.get_dataset(get_dataset(&draft)).await, Code::NotFound);
    refused(samr.get_dataset(get_dataset(&draft)).await, Code::NotFound);
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Publishing

async fn a_valid_batch_gets_consecutive_sequences(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;

    let records: Vec<Json> = (1..=5).map(company).collect();
    let request = batch(&dataset, "batch-1", records.iter().map(upsert).collect());
    let first = ok(samr.publish(request).await);
    assert_eq!(first.idempotency_key, "batch-1");
    assert_eq!((first.accepted, first.first_sequence, first.last_sequence), (5, 1, 5));
    assert!(first.rejected.is_empty() && !first.replayed);

    let second = ok(samr.publish(companies(&dataset, "batch-2", 6..=8)).await);
    assert_eq!(
        (second.accepted, second.first_sequence, second.last_sequence),
        (3, 6, 8)
    );

    let changes = fetch_all(&mut samr, &dataset, 0).await;
    assert_eq!(sequences(&changes), (1..=8).collect::<Vec<_>>());
    for (change, serial) in changes.iter().zip(1..) {
        assert_eq!(change.op, pb::ChangeOp::Upsert as i32);
        assert_eq!(key_of(change), Json::Array(vec![Json::String(company_uscc(serial))]));
        // The stored record is the publisher's own bytes.
        assert_eq!(change.record, company(serial).to_string().into_bytes());
        assert!(change.published_at.is_some());
    }

    let now = ok(samr.get_dataset(get_dataset(&dataset)).await);
    assert_eq!(dataset_of(now.clone()), (8, 8));
    assert!(now.last_published_at.is_some());
    hub.finish().await;
}

async fn reject_all_stores_nothing_when_one_record_is_bad(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;

    let mut changes: Vec<pb::RecordChange> = (1..=4).map(|s| upsert(&company(s))).collect();
    changes[2] = upsert(&wrong_check_character(3));
    let answer = ok(samr.publish(batch(&dataset, "all-or-nothing", changes.clone())).await);
    assert_eq!(answer.accepted, 0);
    assert_eq!((answer.first_sequence, answer.last_sequence), (0, 0));
    assert!(!answer.replayed);
    assert_eq!(answer.rejected.len(), 1);
    assert_eq!(answer.rejected[0].index, 2);
    let error = &answer.rejected[0].errors[0];
    assert_eq!(
        (error.instance_pointer.as_str(), error.keyword.as_str()),
        ("/uscc", "format")
    );
    assert!(error.message.contains("check character"), "{}", error.message);

    assert!(fetch_all(&mut samr, &dataset, 0).await.is_empty());
    assert_eq!(dataset_of(ok(samr.get_dataset(get_dataset(&dataset)).await)), (0, 0));

    // Nothing was stored under the key: the corrected batch goes through with it.
    changes[2] = upsert(&company(3));
    let fixed = ok(samr.publish(batch(&dataset, "all-or-nothing", changes)).await);
    assert_eq!((fixed.accepted, fixed.first_sequence, fixed.last_sequence), (4, 1, 4));
    assert!(!fixed.replayed);

    // Other reasons: not JSON, a missing required property, neither upsert nor delete.
    let mut missing = company(9);
    missing.as_object_mut().expect("object").remove("legal_representative");
    let answer = ok(samr
        .publish(batch(
            &dataset,
            "reasons",
            vec![
                upsert(&company(8)),
                upsert_bytes(b"{not json".to_vec()),
                upsert(&missing),
                pb::RecordChange { change: None },
            ],
        ))
        .await);
    assert_eq!(answer.accepted, 0);
    let reasons: Vec<(u32, String)> = answer
        .rejected
        .iter()
        .map(|r| (r.index, r.errors[0].keyword.clone()))
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "parse".to_string()),
            (2, "required".to_string()),
            (3, "change".to_string())
        ]
    );
    assert_eq!(sequences(&fetch_all(&mut samr, &dataset, 0).await), [1, 2, 3, 4]);

    // Lenient: a wrong check character is accepted.
    let mut lenient = batch(&dataset, "lenient", vec![upsert(&wrong_check_character(10))]);
    lenient.lenient = true;
    let answer = ok(samr.publish(lenient).await);
    assert_eq!((answer.accepted, answer.first_sequence), (1, 5));
    hub.finish().await;
}

async fn accept_valid_stores_the_valid_records_and_reports_each_rejected_one(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;

    let mut missing = company(4);
    missing.as_object_mut().expect("object").remove("status");
    let mut request = batch(
        &dataset,
        "mixed",
        vec![
            upsert(&company(1)),
            upsert(&wrong_check_character(2)),
            upsert(&company(3)),
            upsert(&missing),
            upsert(&company(5)),
        ],
    );
    request.policy = pb::BatchPolicy::AcceptValid as i32;
    let answer = ok(samr.publish(request).await);
    assert_eq!(
        (answer.accepted, answer.first_sequence, answer.last_sequence),
        (3, 1, 3)
    );
    let rejected: Vec<(u32, String, String)> = answer
        .rejected
        .iter()
        .map(|r| {
            (
                r.index,
                r.errors[0].instance_pointer.clone(),
                r.errors[0].keyword.clone(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (1, "/uscc".to_string(), "format".to_string()),
            (3, String::new(), "required".to_string())
        ]
    );

    let stored = fetch_all(&mut samr, &dataset, 0).await;
    assert_eq!(sequences(&stored), [1, 2, 3]);
    assert_eq!(names(&stored), ["公司1", "公司3", "公司5"]);
    assert_eq!(dataset_of(ok(samr.get_dataset(get_dataset(&dataset)).await)), (3, 3));

    // A batch with nothing valid stores nothing, and says so.
    let mut none = batch(&dataset, "none-valid", vec![upsert(&wrong_check_character(6))]);
    none.policy = pb::BatchPolicy::AcceptValid as i32;
    let answer = ok(samr.publish(none).await);
    assert_eq!(
        (answer.accepted, answer.first_sequence, answer.last_sequence),
        (0, 0, 0)
    );
    assert_eq!(answer.rejected.len(), 1);
    assert_eq!(fetch_all(&mut samr, &dataset, 0).await.len(), 3);
    hub.finish().await;
}

async fn a_retried_batch_is_replayed_and_writes_nothing(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;

    let mut request = batch(
        &dataset,
        "retry-me",
        vec![
            upsert(&company(1)),
            upsert(&wrong_check_character(2)),
            upsert(&company(3)),
        ],
    );
    request.policy = pb::BatchPolicy::AcceptValid as i32;
    let first = ok(samr.publish(request.clone()).await);
    assert_eq!((first.accepted, first.first_sequence, first.last_sequence), (2, 1, 2));
    ok(samr.publish(companies(&dataset, "other", [7])).await);
    let before = fetch_all(&mut samr, &dataset, 0).await;
    assert_eq!(before.len(), 3);

    for _ in 0..2 {
        let again = ok(samr.publish(request.clone()).await);
        assert!(again.replayed, "a retry is answered as a replay");
        assert_eq!(
            (
                again.accepted,
                again.first_sequence,
                again.last_sequence,
                again.idempotency_key.as_str()
            ),
            (2, 1, 2, "retry-me")
        );
        assert_eq!(again.rejected, first.rejected, "the replay reports the same rejections");
    }
    // Even a different body under the same key writes nothing: the key names the batch.
    let different = ok(samr.publish(companies(&dataset, "retry-me", 100..110)).await);
    assert!(different.replayed);
    assert_eq!((different.first_sequence, different.last_sequence), (1, 2));

    assert_eq!(fetch_all(&mut samr, &dataset, 0).await, before);
    assert_eq!(dataset_of(ok(samr.get_dataset(get_dataset(&dataset)).await)), (3, 3));

    // A key is per dataset: the same key in another dataset is a new batch.
    let other = hub
        .open_table(SAMR, content("企业年报信息", "102001", "企业年度报告"))
        .await
        .dataset;
    let elsewhere = ok(samr.publish(companies(&other, "retry-me", [1])).await);
    assert!(!elsewhere.replayed);
    assert_eq!((elsewhere.first_sequence, elsewhere.last_sequence), (1, 1));
    hub.finish().await;
}

async fn deletes_remove_keys_and_the_record_count_follows(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;
    let count = |d: pb::Dataset| d.record_count;

    ok(samr.publish(companies(&dataset, "b1", 1..=4)).await);
    assert_eq!(count(ok(samr.get_dataset(get_dataset(&dataset)).await)), 4);

    // Replacing a record keeps the count.
    ok(samr
        .publish(batch(&dataset, "b2", vec![upsert(&company_named(2, "改名公司"))]))
        .await);
    assert_eq!(count(ok(samr.get_dataset(get_dataset(&dataset)).await)), 4);

    let deleted = ok(samr.publish(batch(&dataset, "b3", vec![delete_company(3)])).await);
    assert_eq!((deleted.accepted, deleted.first_sequence), (1, 6));
    let d = ok(samr.get_dataset(get_dataset(&dataset)).await);
    assert_eq!((d.record_count, d.last_sequence), (3, 6));
    let change = fetch_all(&mut samr, &dataset, 5).await.remove(0);
    assert_eq!(change.op, pb::ChangeOp::Delete as i32);
    assert_eq!(key_of(&change), Json::Array(vec![Json::String(company_uscc(3))]));
    assert!(change.record.is_empty(), "a delete carries no record");

    // Deleting an absent key, and one key changed several times within a batch.
    ok(samr
        .publish(batch(
            &dataset,
            "b4",
            vec![
                delete_company(99),
                upsert(&company(5)),
                delete_company(5),
                upsert(&company(6)),
                delete_company(1),
                upsert(&company(1)),
            ],
        ))
        .await);
    // Present: 1, 2, 4, 6.
    let d = ok(samr.get_dataset(get_dataset(&dataset)).await);
    assert_eq!((d.record_count, d.last_sequence), (4, 12));
    let (_, present) = snapshot_records(&mut samr, &dataset, 0).await;
    let mut keys: Vec<String> = present.iter().map(|c| record_of(c)["uscc"].to_string()).collect();
    keys.sort();
    let mut expected: Vec<String> = [1, 2, 4, 6].map(|s| Json::String(company_uscc(s)).to_string()).to_vec();
    expected.sort();
    assert_eq!(keys, expected);

    // A delete without the key property is rejected, not stored.
    let answer = ok(samr
        .publish(batch(
            &dataset,
            "b5",
            vec![pb::RecordChange {
                change: Some(pb::record_change::Change::Delete(b"{\"name\":\"x\"}".to_vec())),
            }],
        ))
        .await);
    assert_eq!(answer.accepted, 0);
    assert_eq!(answer.rejected[0].errors[0].keyword, "key");
    assert_eq!(dataset_of(ok(samr.get_dataset(get_dataset(&dataset)).await)), (4, 12));
    hub.finish().await;
}

async fn only_the_provider_publishes(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut police = hub.exchange(POLICE).await;
    let mut admin = hub.exchange_admin().await;

    refused(
        police.publish(companies(&dataset, "police", 1..=2)).await,
        Code::PermissionDenied,
    );
    refused(
        admin.publish(companies(&dataset, "admin", 1..=2)).await,
        Code::PermissionDenied,
    );
    // Nor through a stream.
    let mut answers = ok(police
        .publish_stream(tokio_stream::iter(vec![companies(&dataset, "police-stream", [1])]))
        .await);
    let first = timeout(GUARD, answers.message()).await.expect("an answer");
    assert_eq!(first.expect_err("refused").code(), Code::PermissionDenied);

    let mut samr = hub.exchange(SAMR).await;
    assert!(fetch_all(&mut samr, &dataset, 0).await.is_empty());

    // Publishing to a missing dataset; to an entry without a dataset.
    refused(samr.publish(companies("102001/999999", "k", [1])).await, Code::NotFound);
    let bare = hub
        .published_entry(SAMR, content("企业年报信息", "102001", "年报"))
        .await;
    refused(samr.publish(companies(&bare, "k", [1])).await, Code::NotFound);

    // A withdrawn entry takes no more records.
    ok(hub
        .dept(SAMR)
        .await
        .withdraw_entry(withdraw(&dataset, "停止共享"))
        .await);
    refused(
        samr.publish(companies(&dataset, "after-withdrawal", [1])).await,
        Code::FailedPrecondition,
    );
    hub.finish().await;
}

async fn batch_and_record_limits_are_enforced(backend: Backend) {
    let hub = TestHub::start_with(backend, |config| {
        config.limits.max_batch_records = 10;
        config.limits.max_record_bytes = 1024;
    })
    .await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;

    let status = refused(
        samr.publish(companies(&dataset, "too-many", 1..=11)).await,
        Code::ResourceExhausted,
    );
    assert!(status.message().contains("11"), "{}", status.message());
    // Exactly the limit is fine, but first the oversized record: ~1.2 KB of address.
    let mut big = company(20);
    big["address"] = Json::String("杭州市".repeat(140));
    assert!(big.to_string().len() > 1024 && big.to_string().chars().count() < 1024);
    for policy in [pb::BatchPolicy::RejectAll, pb::BatchPolicy::AcceptValid] {
        let mut request = batch(&dataset, "big", vec![upsert(&company(19)), upsert(&big)]);
        request.policy = policy as i32;
        let status = refused(samr.publish(request).await, Code::ResourceExhausted);
        assert!(status.message().contains("change 1"), "{}", status.message());
    }
    assert!(fetch_all(&mut samr, &dataset, 0).await.is_empty());
    assert_eq!(dataset_of(ok(samr.get_dataset(get_dataset(&dataset)).await)), (0, 0));

    let answer = ok(samr.publish(companies(&dataset, "ten", 1..=10)).await);
    assert_eq!((answer.accepted, answer.last_sequence), (10, 10));

    // The idempotency key is required.
    invalid(samr.publish(companies(&dataset, "", [30])).await, &["idempotency_key"]);
    invalid(
        samr.publish(companies(&dataset, "   ", [30])).await,
        &["idempotency_key"],
    );
    invalid(
        samr.publish(companies(&dataset, &"k".repeat(201), [30])).await,
        &["idempotency_key"],
    );
    assert_eq!(fetch_all(&mut samr, &dataset, 0).await.len(), 10);
    hub.finish().await;
}

async fn publish_stream_acknowledges_each_batch_in_order(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let other = hub
        .open_table(HRSS, content("用人单位信息", "102001", "参保单位"))
        .await
        .dataset;
    let mut samr = hub.exchange(SAMR).await;

    let sizes = [3u64, 1, 50, 7, 20];
    let mut requests = Vec::new();
    let mut serial = 0;
    for (i, size) in sizes.iter().enumerate() {
        requests.push(companies(&dataset, &format!("stream-{i}"), serial..serial + size));
        serial += size;
    }
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut answers = ok(samr.publish_stream(ReceiverStream::new(rx)).await);
    let mut expected_first = 1;
    for (i, request) in requests.into_iter().enumerate() {
        tx.send(request).await.expect("the stream is open");
        // Each batch is acknowledged once committed, before the next is sent.
        let answer = timeout(GUARD, answers.message())
            .await
            .expect("acknowledged")
            .expect("committed")
            .expect("an answer per batch");
        assert_eq!(answer.idempotency_key, format!("stream-{i}"));
        assert_eq!(
            (answer.accepted as u64, answer.first_sequence, answer.last_sequence),
            (sizes[i], expected_first, expected_first + sizes[i] - 1)
        );
        expected_first += sizes[i];
        let visible = ok(samr.fetch(fetch(&dataset, 0, 0)).await);
        assert_eq!(
            visible.last_sequence, answer.last_sequence,
            "committed when acknowledged"
        );
    }
    // A replay and a rejecting batch are answered, not fatal; a refused batch ends the stream
    // and the batches after it are not committed.
    tx.send(companies(&dataset, "stream-0", [0])).await.expect("open");
    let replay = timeout(GUARD, answers.message())
        .await
        .expect("answer")
        .expect("ok")
        .expect("some");
    assert!(replay.replayed);
    tx.send(batch(&dataset, "bad", vec![upsert(&wrong_check_character(500))]))
        .await
        .expect("open");
    let bad = timeout(GUARD, answers.message())
        .await
        .expect("answer")
        .expect("ok")
        .expect("some");
    assert_eq!((bad.accepted, bad.rejected.len()), (0, 1));
    tx.send(companies(&other, "not-mine", [1])).await.expect("open");
    let _ = tx.send(companies(&dataset, "after-refusal", [900])).await;
    let refusal = timeout(GUARD, answers.message()).await.expect("answer");
    assert_eq!(refusal.expect_err("refused").code(), Code::PermissionDenied);
    drop(tx);
    let total: u64 = sizes.iter().sum();
    let stored = fetch_all(&mut samr, &dataset, 0).await;
    assert_eq!(sequences(&stored), (1..=total).collect::<Vec<_>>());
    assert_eq!(
        names(&stored),
        (0..total).map(|s| format!("公司{s}")).collect::<Vec<_>>()
    );
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Reading

async fn fetch_pages_by_limit_and_cursor(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;
    let mut police = hub.exchange(POLICE).await;

    let empty = ok(police.fetch(fetch(&dataset, 0, 0)).await);
    assert!(empty.changes.is_empty());
    assert_eq!(empty.last_sequence, 0);

    ok(samr.publish(companies(&dataset, "a", 1..=15)).await);
    ok(samr.publish(companies(&dataset, "b", 16..=25)).await);

    let page = |after, limit| fetch(&dataset, after, limit);
    let first = ok(police.fetch(page(0, 10)).await);
    assert_eq!(sequences(&first.changes), (1..=10).collect::<Vec<_>>());
    assert_eq!(first.last_sequence, 25);
    let second = ok(police.fetch(page(10, 10)).await);
    assert_eq!(sequences(&second.changes), (11..=20).collect::<Vec<_>>());
    let third = ok(police.fetch(page(20, 10)).await);
    assert_eq!(sequences(&third.changes), (21..=25).collect::<Vec<_>>());
    let past = ok(police.fetch(page(25, 10)).await);
    assert!(past.changes.is_empty());
    assert_eq!(past.last_sequence, 25);
    assert!(ok(police.fetch(page(1_000, 10)).await).changes.is_empty());
    assert_eq!(ok(police.fetch(page(0, 0)).await).changes.len(), 25, "the default page");
    assert_eq!(ok(police.fetch(page(13, 10_000)).await).changes.len(), 12);
    assert_eq!(sequences(&ok(police.fetch(page(7, 1)).await).changes), [8]);

    // Walking page by page sees each change once, in order.
    let mut walked = Vec::new();
    let mut after = 0;
    loop {
        let p = ok(police.fetch(page(after, 4)).await);
        let Some(last) = p.changes.last() else { break };
        after = last.sequence;
        walked.extend(p.changes);
    }
    assert_eq!(sequences(&walked), (1..=25).collect::<Vec<_>>());
    assert_eq!(names(&walked), (1..=25).map(|s| format!("公司{s}")).collect::<Vec<_>>());

    invalid(police.fetch(page(0, 10_001)).await, &["limit"]);
    invalid(police.fetch(page(0, 20_000)).await, &["limit"]);
    refused(police.fetch(fetch("102001/999999", 0, 0)).await, Code::NotFound);
    hub.finish().await;
}

async fn snapshots_hold_the_latest_version_of_each_present_key(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;
    let mut police = hub.exchange(POLICE).await;

    // An empty dataset has an empty snapshot at 0.
    let (at, records) = snapshot_records(&mut police, &dataset, 0).await;
    assert_eq!((at, records.len()), (0, 0));

    // 1-3: A, B, C. 4: B renamed. 5: C deleted. 6: D.
    ok(samr.publish(companies(&dataset, "first", 1..=3)).await);
    ok(samr
        .publish(batch(
            &dataset,
            "second",
            vec![
                upsert(&company_named(2, "公司2(变更)")),
                delete_company(3),
                upsert(&company(4)),
            ],
        ))
        .await);

    let view = |records: &[pb::Change]| -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = records
            .iter()
            .map(|c| {
                (
                    c.sequence,
                    record_of(c)["name"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1));
        v
    };
    let (at, now) = snapshot_records(&mut police, &dataset, 0).await;
    assert_eq!(at, 6);
    assert_eq!(
        view(&now),
        [
            (1, "公司1".to_string()),
            (4, "公司2(变更)".to_string()),
            (6, "公司4".to_string())
        ]
    );
    assert!(now.iter().all(|c| c.op == pb::ChangeOp::Upsert as i32));
    assert_eq!(snapshot_records(&mut police, &dataset, 6).await, (6, now.clone()));

    let (at, older) = snapshot_records(&mut police, &dataset, 3).await;
    assert_eq!(at, 3);
    assert_eq!(
        view(&older),
        [
            (1, "公司1".to_string()),
            (2, "公司2".to_string()),
            (3, "公司3".to_string())
        ]
    );
    let (_, at_four) = snapshot_records(&mut police, &dataset, 4).await;
    assert_eq!(
        view(&at_four),
        [
            (1, "公司1".to_string()),
            (4, "公司2(变更)".to_string()),
            (3, "公司3".to_string())
        ]
    );

    let status = invalid(police.snapshot(snapshot(&dataset, 7)).await, &["as_of_sequence"]);
    assert!(status.message().contains('6'), "{}", status.message());

    // Continue from the snapshot's sequence: exactly the later changes.
    let later = fetch_all(&mut police, &dataset, 3).await;
    assert_eq!(sequences(&later), [4, 5, 6]);
    assert_eq!(
        later.iter().map(|c| c.op).collect::<Vec<_>>(),
        [
            pb::ChangeOp::Upsert as i32,
            pb::ChangeOp::Delete as i32,
            pb::ChangeOp::Upsert as i32
        ]
    );
    hub.finish().await;
}

/// The snapshot at each sequence equals the log replayed up to it.
async fn snapshots_agree_with_the_log_at_every_sequence(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;

    // A deterministic mix of inserts, updates and deletes over 12 keys.
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    for b in 0..8 {
        let changes = (0..6)
            .map(|i| {
                let serial = next() % 12;
                if next() % 3 == 0 {
                    delete_company(serial)
                } else {
                    upsert(&company_named(serial, &format!("公司{serial}-{b}-{i}")))
                }
            })
            .collect();
        ok(samr.publish(batch(&dataset, &format!("mix-{b}"), changes)).await);
    }
    let log = fetch_all(&mut samr, &dataset, 0).await;
    assert_eq!(sequences(&log), (1..=48).collect::<Vec<_>>());
    for as_of in 1..=48 {
        let mut expected: BTreeMap<Vec<u8>, (u64, Vec<u8>)> = BTreeMap::new();
        for change in log.iter().take(as_of as usize) {
            if change.op == pb::ChangeOp::Delete as i32 {
                expected.remove(&change.key);
            } else {
                expected.insert(change.key.clone(), (change.sequence, change.record.clone()));
            }
        }
        let (at, records) = snapshot_records(&mut samr, &dataset, as_of).await;
        assert_eq!(at, as_of);
        let got: BTreeMap<Vec<u8>, (u64, Vec<u8>)> = records
            .iter()
            .map(|c| (c.key.clone(), (c.sequence, c.record.clone())))
            .collect();
        assert_eq!(got.len(), records.len(), "each key once (as of {as_of})");
        assert_eq!(got, expected, "the snapshot as of {as_of}");
    }
    let d = ok(samr.get_dataset(get_dataset(&dataset)).await);
    let (_, now) = snapshot_records(&mut samr, &dataset, 0).await;
    assert_eq!(d.record_count, now.len() as u64, "record_count counts the present keys");
    hub.finish().await;
}

async fn large_snapshots_stream_in_key_ordered_chunks(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;
    // 1,300 keys, published in descending key order so that key order and log order differ.
    let serials: Vec<u64> = (0..1300).rev().collect();
    for (i, chunk) in serials.chunks(500).enumerate() {
        ok(samr
            .publish(companies(&dataset, &format!("load-{i}"), chunk.iter().copied()))
            .await);
    }
    // Then delete every tenth.
    ok(samr
        .publish(batch(
            &dataset,
            "deletes",
            (0..1300).step_by(10).map(delete_company).collect(),
        ))
        .await);

    let mut police = hub.exchange(POLICE).await;
    let (at, chunks) = read_snapshot(&mut police, &dataset, 0).await;
    assert_eq!(at, 1430);
    assert!(chunks.len() >= 2, "a large snapshot comes in several chunks");
    let records: Vec<pb::Change> = chunks.into_iter().flatten().collect();
    assert_eq!(records.len(), 1170);
    let keys: Vec<Vec<u8>> = records.iter().map(|c| c.key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "ordered by key, each key once");
    let mut expected: Vec<String> = (0..1300).filter(|s| s % 10 != 0).map(company_uscc).collect();
    expected.sort();
    let got: Vec<String> = records
        .iter()
        .map(|c| record_of(c)["uscc"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(got, expected);
    hub.finish().await;
}

async fn subscribe_delivers_live_changes_in_order_without_gaps(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;
    let mut police = hub.exchange(POLICE).await;

    // A subscription opened before anything is published.
    let mut live = ok(police.subscribe(subscribe(&dataset, 0, "", 0)).await);
    let mut small = ok(police.subscribe(subscribe(&dataset, 0, "", 4)).await);

    ok(samr.publish(companies(&dataset, "one", 1..=10)).await);
    let (changes, sizes) = receive(&mut live, 10).await;
    assert_eq!(sequences(&changes), (1..=10).collect::<Vec<_>>());
    assert_eq!(sizes, [10], "one committed batch arrives in one message");
    assert_eq!(
        names(&changes),
        (1..=10).map(|s| format!("公司{s}")).collect::<Vec<_>>()
    );

    let (changes, sizes) = receive(&mut small, 10).await;
    assert_eq!(sequences(&changes), (1..=10).collect::<Vec<_>>());
    assert_eq!(sizes, [4, 4, 2], "at most max_batch changes per message");

    // Later batches follow, several changes per message, in order, across batches.
    for b in 0..5u64 {
        ok(samr
            .publish(companies(
                &dataset,
                &format!("more-{b}"),
                100 + b * 10..100 + b * 10 + 10,
            ))
            .await);
    }
    ok(samr.publish(batch(&dataset, "delete", vec![delete_company(1)])).await);
    let (changes, sizes) = receive(&mut live, 51).await;
    assert_eq!(sequences(&changes), (11..=61).collect::<Vec<_>>());
    assert!(sizes.iter().all(|s| *s <= 500));
    let last = changes.last().expect("61");
    assert_eq!(last.op, pb::ChangeOp::Delete as i32);
    let (changes, sizes) = receive(&mut small, 51).await;
    assert_eq!(sequences(&changes), (11..=61).collect::<Vec<_>>());
    assert!(sizes.iter().all(|s| *s <= 4) && sizes.iter().any(|s| *s > 1));

    // From a cursor: the history after it first, then live.
    let mut from_cursor = ok(police.subscribe(subscribe(&dataset, 55, "", 0)).await);
    let (changes, _) = receive(&mut from_cursor, 6).await;
    assert_eq!(sequences(&changes), (56..=61).collect::<Vec<_>>());
    ok(samr.publish(companies(&dataset, "last", [999])).await);
    let (changes, _) = receive(&mut from_cursor, 1).await;
    assert_eq!(sequences(&changes), [62]);
    let (changes, _) = receive(&mut live, 1).await;
    assert_eq!(names(&changes), ["公司999"]);

    // Far behind, in batches of two: the hub reads the store several batches at a time, and the
    // next page while this one goes out; still every change once, in order.
    let mut behind = ok(police.subscribe(subscribe(&dataset, 0, "", 2)).await);
    let (changes, sizes) = receive(&mut behind, 62).await;
    assert_eq!(sequences(&changes), (1..=62).collect::<Vec<_>>());
    assert!(sizes.iter().all(|s| *s == 2), "{sizes:?}");

    // The batch tells how far the dataset goes.
    let mut again = ok(police.subscribe(subscribe(&dataset, 60, "", 0)).await);
    let batch = next_batch(&mut again).await;
    assert_eq!(batch.last_sequence, 62);
    assert_eq!(sequences(&batch.changes), [61, 62]);
    refused(
        police.subscribe(subscribe("102001/999999", 0, "", 0)).await,
        Code::NotFound,
    );
    hub.finish().await;
}

/// Several publishers at once: a subscriber and a reader polling Fetch each see 1..N in order,
/// never a change numbered at or below one they have already seen appearing later.
async fn concurrent_publishers_never_make_a_follower_skip_a_sequence(backend: Backend) {
    const TASKS: u64 = 4;
    const BATCHES: u64 = 15;
    const SIZE: u64 = 50;
    const TOTAL: u64 = TASKS * BATCHES * SIZE;
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut police = hub.exchange(POLICE).await;
    let mut live = ok(police.subscribe(subscribe(&dataset, 0, "", 0)).await);
    let follower = tokio::spawn(async move { receive(&mut live, TOTAL as usize).await.0 });
    let poller = {
        let (mut client, dataset) = (hub.exchange(HRSS).await, dataset.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            while after < TOTAL {
                let page = ok(client.fetch(fetch(&dataset, after, 37)).await);
                if let Some(last) = page.changes.last() {
                    after = last.sequence;
                }
                seen.extend(sequences(&page.changes));
            }
            seen
        })
    };
    let mut publishers = Vec::new();
    for t in 0..TASKS {
        let (mut client, dataset) = (hub.exchange(SAMR).await, dataset.clone());
        publishers.push(tokio::spawn(async move {
            for b in 0..BATCHES {
                let first = (t * BATCHES + b) * SIZE;
                let answer = ok(client
                    .publish(companies(&dataset, &format!("t{t}-b{b}"), first..first + SIZE))
                    .await);
                assert_eq!(answer.last_sequence - answer.first_sequence + 1, SIZE);
            }
        }));
    }
    for p in publishers {
        timeout(GUARD, p)
            .await
            .expect("a publisher finishes")
            .expect("publisher");
    }
    let followed = timeout(GUARD, follower)
        .await
        .expect("the follower finishes")
        .expect("follower");
    assert_eq!(sequences(&followed), (1..=TOTAL).collect::<Vec<_>>());
    let mut names = names(&followed);
    names.sort();
    names.dedup();
    assert_eq!(names.len() as u64, TOTAL, "every record once");
    let polled = timeout(GUARD, poller)
        .await
        .expect("the poller finishes")
        .expect("poller");
    assert_eq!(polled, (1..=TOTAL).collect::<Vec<_>>());
    hub.finish().await;
}

async fn named_consumers_resume_after_their_acknowledged_position(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;
    let mut police = hub.exchange(POLICE).await;
    let get_consumer = |consumer: &str| pb::GetConsumerRequest {
        dataset: dataset.clone(),
        consumer: consumer.into(),
    };

    ok(samr.publish(companies(&dataset, "first", 1..=10)).await);
    refused(police.get_consumer(get_consumer("etl")).await, Code::NotFound);

    // Without a cursor yet, the consumer starts at after_sequence.
    let mut stream = ok(police.subscribe(subscribe(&dataset, 2, "etl", 3)).await);
    let (changes, _) = receive(&mut stream, 8).await;
    assert_eq!(sequences(&changes), (3..=10).collect::<Vec<_>>());
    let cursor = ok(police.acknowledge(acknowledge(&dataset, "etl", 6)).await);
    assert_eq!(
        (
            cursor.dataset.as_str(),
            cursor.consumer.as_str(),
            cursor.acknowledged_sequence
        ),
        (dataset.as_str(), "etl", 6)
    );
    assert!(cursor.updated_at.is_some());
    drop(stream);
    assert_eq!(
        ok(police.get_consumer(get_consumer("etl")).await).acknowledged_sequence,
        6
    );

    // A new subscription resumes after the acknowledged position, whatever after_sequence says.
    for after in [0, 2, 9] {
        let mut resumed = ok(police.subscribe(subscribe(&dataset, after, "etl", 0)).await);
        let (changes, _) = receive(&mut resumed, 4).await;
        assert_eq!(sequences(&changes), [7, 8, 9, 10], "after_sequence {after} is ignored");
    }

    // The position never moves back.
    let kept = ok(police.acknowledge(acknowledge(&dataset, "etl", 4)).await);
    assert_eq!(kept.acknowledged_sequence, 6);
    assert_eq!(
        ok(police.acknowledge(acknowledge(&dataset, "etl", 10)).await).acknowledged_sequence,
        10
    );
    let mut resumed = ok(police.subscribe(subscribe(&dataset, 0, "etl", 0)).await);
    ok(samr.publish(companies(&dataset, "second", [11])).await);
    let (changes, _) = receive(&mut resumed, 1).await;
    assert_eq!(sequences(&changes), [11]);

    // Not beyond the last sequence; a well-formed name.
    let status = invalid(
        police.acknowledge(acknowledge(&dataset, "etl", 12)).await,
        &["sequence"],
    );
    assert!(status.message().contains("11"), "{}", status.message());
    invalid(police.acknowledge(acknowledge(&dataset, "a b", 1)).await, &["consumer"]);
    invalid(police.acknowledge(acknowledge(&dataset, "", 1)).await, &["consumer"]);
    invalid(
        police.subscribe(subscribe(&dataset, 0, "bad/name", 0)).await,
        &["consumer"],
    );
    assert_eq!(
        ok(police.get_consumer(get_consumer("etl")).await).acknowledged_sequence,
        10
    );

    // Consumers belong to their department: the provider's "etl" is another cursor.
    refused(samr.get_consumer(get_consumer("etl")).await, Code::NotFound);
    let mut own = ok(samr.subscribe(subscribe(&dataset, 0, "etl", 0)).await);
    let (changes, _) = receive(&mut own, 11).await;
    assert_eq!(sequences(&changes), (1..=11).collect::<Vec<_>>());
    // The admin has no consumers.
    refused(
        hub.exchange_admin()
            .await
            .acknowledge(acknowledge(&dataset, "etl", 1))
            .await,
        Code::PermissionDenied,
    );
    hub.finish().await;
}

async fn share_types_decide_who_reads(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let open = hub.open_table(SAMR, enterprise()).await.dataset;
    let conditional = hub
        .open_table(
            SAMR,
            shared_as(
                content("行政处罚信息", "102001", "行政处罚决定"),
                pb::ShareType::Conditional,
                pb::ExchangeKind::Table,
            ),
        )
        .await
        .dataset;
    let not_shared = hub
        .open_table(
            SAMR,
            shared_as(
                content("企业内部核查信息", "102001", "内部核查"),
                pb::ShareType::NotShared,
                pb::ExchangeKind::Table,
            ),
        )
        .await
        .dataset;
    let mut samr = hub.exchange(SAMR).await;
    for (i, dataset) in [&open, &conditional, &not_shared].into_iter().enumerate() {
        ok(samr.publish(companies(dataset, "records", [i as u64 + 1])).await);
    }
    let mut police = hub.exchange(POLICE).await;
    let mut admin = hub.exchange_admin().await;

    // The provider reads every one of its datasets, whatever its share type.
    for dataset in [&open, &conditional, &not_shared] {
        assert_eq!(ok(samr.fetch(fetch(dataset, 0, 0)).await).changes.len(), 1);
        assert_eq!(snapshot_records(&mut samr, dataset, 0).await.1.len(), 1);
        let mut stream = ok(samr.subscribe(subscribe(dataset, 0, "", 0)).await);
        receive(&mut stream, 1).await;
        ok(samr.acknowledge(acknowledge(dataset, "own", 1)).await);
    }

    // 无条件共享: another department reads.
    let fetched = ok(police.fetch(fetch(&open, 0, 0)).await);
    assert_eq!(names(&fetched.changes), ["公司1"]);
    assert_eq!(snapshot_records(&mut police, &open, 0).await.1.len(), 1);
    let mut stream = ok(police.subscribe(subscribe(&open, 0, "police", 0)).await);
    receive(&mut stream, 1).await;
    ok(police.acknowledge(acknowledge(&open, "police", 1)).await);

    // 有条件共享 (no grant) and 不予共享: refused on every read.
    for (dataset, standing) in [
        (&conditional, pb::Standing::Requestable),
        (&not_shared, pb::Standing::NotShared),
    ] {
        let status = refused(police.fetch(fetch(dataset, 0, 0)).await, Code::PermissionDenied);
        let expected = if standing == pb::Standing::Requestable {
            "有条件共享"
        } else {
            "不予共享"
        };
        assert!(status.message().contains(expected), "{}", status.message());
        refused(police.snapshot(snapshot(dataset, 0)).await, Code::PermissionDenied);
        refused(
            police.subscribe(subscribe(dataset, 0, "", 0)).await,
            Code::PermissionDenied,
        );
        refused(
            police.acknowledge(acknowledge(dataset, "police", 1)).await,
            Code::PermissionDenied,
        );
        // It may still see that the dataset exists and what it would take.
        assert_eq!(
            ok(police.get_dataset(get_dataset(dataset)).await).standing,
            standing as i32
        );
    }

    // The platform admin manages the exchange but reads no records.
    for dataset in [&open, &conditional, &not_shared] {
        let status = refused(admin.fetch(fetch(dataset, 0, 0)).await, Code::PermissionDenied);
        assert!(status.message().contains("admin"), "{}", status.message());
        refused(admin.snapshot(snapshot(dataset, 0)).await, Code::PermissionDenied);
        refused(
            admin.subscribe(subscribe(dataset, 0, "", 0)).await,
            Code::PermissionDenied,
        );
    }

    // A withdrawn entry's dataset disappears for others; the provider still reads it.
    ok(hub.dept(SAMR).await.withdraw_entry(withdraw(&open, "停止共享")).await);
    refused(police.fetch(fetch(&open, 0, 0)).await, Code::NotFound);
    refused(police.subscribe(subscribe(&open, 0, "police", 0)).await, Code::NotFound);
    assert_eq!(ok(samr.fetch(fetch(&open, 0, 0)).await).changes.len(), 1);
    hub.finish().await;
}

fn list(keyword: &str, provider: &str, kind: pb::DatasetKind, standing: pb::Standing) -> pb::ListDatasetsRequest {
    pb::ListDatasetsRequest {
        keyword: keyword.into(),
        provider_code: provider.into(),
        kind: kind as i32,
        standing: standing as i32,
        page_size: 0,
        page_token: String::new(),
    }
}

/// Every dataset a listing finds (all pages), as (dataset, standing).
async fn listed(client: &mut Exchange, mut request: pb::ListDatasetsRequest) -> Vec<(String, i32)> {
    let mut found = Vec::new();
    for _ in 0..100 {
        let page = ok(client.list_datasets(request.clone()).await);
        found.extend(page.datasets.into_iter().map(|d| (d.dataset, d.standing)));
        if page.next_page_token.is_empty() {
            return found;
        }
        request.page_token = page.next_page_token;
    }
    panic!("paging does not end")
}

async fn the_exchange_catalogue_shows_standing_and_filters(backend: Backend) {
    use pb::DatasetKind as K;
    use pb::Standing as S;
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let table = |share| shared_as(content("placeholder", "102001", "摘要"), share, pb::ExchangeKind::Table);
    let named = |mut c: pb::EntryContent, name: &str| {
        c.name = name.into();
        c
    };
    let open = hub
        .open_table(SAMR, named(table(pb::ShareType::Unconditional), "企业登记信息"))
        .await
        .dataset;
    let conditional = hub
        .open_table(SAMR, named(table(pb::ShareType::Conditional), "行政处罚信息"))
        .await
        .dataset;
    let hidden = hub
        .open_table(SAMR, named(table(pb::ShareType::NotShared), "内部核查信息"))
        .await
        .dataset;
    let files = hub
        .open_files(SAMR, content("企业年报扫描件", "102001", "年报文件"))
        .await
        .dataset;
    let hrss = hub
        .open_table(HRSS, content("用人单位信息", "102001", "参保单位"))
        .await
        .dataset;
    let withdrawn = hub
        .open_table(SAMR, content("已下线信息", "102001", "下线"))
        .await
        .dataset;
    ok(hub.dept(SAMR).await.withdraw_entry(withdraw(&withdrawn, "下线")).await);
    // A published entry without a dataset is not in the exchange catalogue.
    hub.published_entry(SAMR, content("无数据集信息", "102001", "未开通交换"))
        .await;

    let mut police = hub.exchange(POLICE).await;
    let all = |v: &[(&String, S)]| -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = v.iter().map(|(d, s)| ((*d).clone(), *s as i32)).collect();
        v.sort();
        v
    };
    let everything = listed(&mut police, list("", "", K::Unspecified, S::Unspecified)).await;
    assert_eq!(
        everything,
        all(&[
            (&open, S::Open),
            (&conditional, S::Requestable),
            (&hidden, S::NotShared),
            (&files, S::Open),
            (&hrss, S::Open),
        ]),
        "ordered by dataset, withdrawn ones left out"
    );
    assert_eq!(
        listed(&mut police, list("", "", K::Unspecified, S::Open)).await,
        all(&[(&open, S::Open), (&files, S::Open), (&hrss, S::Open)])
    );
    assert_eq!(
        listed(&mut police, list("", "", K::Unspecified, S::Requestable)).await,
        all(&[(&conditional, S::Requestable)])
    );
    assert_eq!(
        listed(&mut police, list("", "", K::Unspecified, S::NotShared)).await,
        all(&[(&hidden, S::NotShared)])
    );
    assert!(
        listed(&mut police, list("", "", K::Unspecified, S::Owner))
            .await
            .is_empty()
    );
    assert!(
        listed(&mut police, list("", "", K::Unspecified, S::Granted))
            .await
            .is_empty()
    );
    assert_eq!(
        listed(&mut police, list("", "", K::File, S::Unspecified)).await,
        all(&[(&files, S::Open)])
    );
    assert_eq!(
        listed(&mut police, list("", HRSS, K::Unspecified, S::Unspecified)).await,
        all(&[(&hrss, S::Open)])
    );
    assert_eq!(
        listed(&mut police, list("处罚", "", K::Unspecified, S::Unspecified)).await,
        all(&[(&conditional, S::Requestable)])
    );
    assert_eq!(
        listed(&mut police, list(&hrss, "", K::Unspecified, S::Unspecified)).await,
        all(&[(&hrss, S::Open)]),
        "a resource code is a keyword too"
    );
    assert!(
        listed(&mut police, list("不存在", "", K::Unspecified, S::Unspecified))
            .await
            .is_empty()
    );

    // The provider sees its own, withdrawn included, as the owner.
    let mut samr = hub.exchange(SAMR).await;
    assert_eq!(
        listed(&mut samr, list("", "", K::Unspecified, S::Owner)).await,
        all(&[
            (&open, S::Owner),
            (&conditional, S::Owner),
            (&hidden, S::Owner),
            (&files, S::Owner),
            (&withdrawn, S::Owner),
        ])
    );
    assert_eq!(
        listed(&mut samr, list("", "", K::Unspecified, S::Open)).await,
        all(&[(&hrss, S::Open)]),
        "Open lists what others share"
    );
    assert_eq!(listed(&mut samr, list("", "", K::Table, S::Owner)).await.len(), 4);

    // Pages of two cover the same datasets.
    let mut paged = list("", "", K::Unspecified, S::Unspecified);
    paged.page_size = 2;
    assert_eq!(listed(&mut police, paged).await, everything);

    // What the listing says matches the dataset.
    let page = ok(police
        .list_datasets(list(&hrss, "", K::Unspecified, S::Unspecified))
        .await);
    let d = &page.datasets[0];
    assert_eq!(
        (
            d.name.as_str(),
            d.provider_code.as_str(),
            d.kind,
            d.schema_subject.as_str()
        ),
        ("用人单位信息", HRSS, K::Table as i32, LEGAL_ENTITY)
    );
    hub.finish().await;
}

/// A subscriber that reads nothing while 20,000 records are published: the hub keeps serving,
/// and once it reads it gets every change in order.
async fn a_subscriber_that_does_not_read_holds_up_nothing_and_misses_nothing(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;
    let mut police = hub.exchange(POLICE).await;
    let mut other = hub.exchange(HRSS).await;

    let mut stalled = ok(police.subscribe(subscribe(&dataset, 0, "", 0)).await);
    let mut reading = ok(other.subscribe(subscribe(&dataset, 0, "", 0)).await);
    let reader = tokio::spawn(async move { receive(&mut reading, 20_000).await.0 });

    const TOTAL: u64 = 20_000;
    for b in 0..TOTAL / 1000 {
        let answer = ok(samr
            .publish(companies(&dataset, &format!("load-{b}"), b * 1000..(b + 1) * 1000))
            .await);
        assert_eq!(answer.last_sequence, (b + 1) * 1000);
        // Other calls are answered meanwhile.
        let page = ok(police.fetch(fetch(&dataset, b * 1000, 1)).await);
        assert_eq!(sequences(&page.changes), [b * 1000 + 1]);
    }
    assert_eq!(ok(police.get_dataset(get_dataset(&dataset)).await).last_sequence, TOTAL);

    let (changes, _) = receive(&mut stalled, TOTAL as usize).await;
    assert_eq!(sequences(&changes), (1..=TOTAL).collect::<Vec<_>>());
    assert_eq!(
        names(&changes),
        (0..TOTAL).map(|s| format!("公司{s}")).collect::<Vec<_>>()
    );
    let read = timeout(GUARD, reader)
        .await
        .expect("the reader finishes")
        .expect("reader");
    assert_eq!(sequences(&read), (1..=TOTAL).collect::<Vec<_>>());
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Files

fn start_upload(dataset: &str, name: &str, bytes: &[u8]) -> pb::StartUploadRequest {
    pb::StartUploadRequest {
        dataset: dataset.into(),
        file_name: name.into(),
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    }
}

fn chunk(upload_id: &str, offset: usize, data: &[u8]) -> pb::FileChunk {
    pb::FileChunk {
        upload_id: upload_id.into(),
        offset: offset as u64,
        data: data.to_vec(),
    }
}

fn upload_status(upload_id: &str) -> pb::GetUploadStatusRequest {
    pb::GetUploadStatusRequest {
        upload_id: upload_id.into(),
    }
}

/// Declares [`PURPOSE`], as a department reading another's open dataset must.
fn download(dataset: &str, name: &str) -> pb::DownloadFileRequest {
    pb::DownloadFileRequest {
        dataset: dataset.into(),
        file_name: name.into(),
        purpose: PURPOSE.into(),
        grant_id: String::new(),
        offset: 0,
    }
}

/// Deterministic bytes that do not repeat in short cycles.
fn file_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// Sends `chunks` as one UploadChunks call.
async fn send_chunks(client: &mut Exchange, chunks: Vec<pb::FileChunk>) -> Result<pb::UploadStatus, tonic::Status> {
    client
        .upload_chunks(tokio_stream::iter(chunks))
        .await
        .map(tonic::Response::into_inner)
}

/// A whole download: the first message's size and digest, and the bytes.
async fn download_all(client: &mut Exchange, dataset: &str, name: &str) -> (u64, String, Vec<u8>, usize) {
    let mut stream = ok(client.download_file(download(dataset, name)).await);
    let mut first: Option<(u64, String)> = None;
    let mut bytes = Vec::new();
    let mut messages = 0;
    loop {
        let message = match timeout(GUARD, stream.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => break,
            Ok(Err(status)) => panic!("the download failed: {:?} {}", status.code(), status.message()),
            Err(_) => panic!("the download stalled"),
        };
        messages += 1;
        if first.is_none() {
            first = Some((message.size, message.sha256.clone()));
        } else {
            assert_eq!(
                (message.size, message.sha256.as_str()),
                (0, ""),
                "size and digest come in the first message only"
            );
        }
        bytes.extend(message.data);
    }
    let (size, sha256) = first.expect("at least one message");
    (size, sha256, bytes, messages)
}

async fn files_upload_in_resumable_pieces_and_download_verified(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let dataset = hub
        .open_files(SAMR, content("企业年报扫描件", "102001", "年报文件"))
        .await
        .dataset;
    let mut samr = hub.exchange(SAMR).await;
    const PIECE: usize = 64 * 1024;
    let bytes = file_bytes(600 * 1024 + 123, 1);
    let name = "2024年度报告.pdf";

    let started = ok(samr.start_upload(start_upload(&dataset, name, &bytes)).await);
    assert!(!started.upload_id.is_empty());
    assert_eq!(
        (
            started.dataset.as_str(),
            started.file_name.as_str(),
            started.size,
            started.received,
            started.complete
        ),
        (dataset.as_str(), name, bytes.len() as u64, 0, false)
    );
    let id = started.upload_id.clone();

    // Two pieces in one call that then ends.
    let status = send_chunks(
        &mut samr,
        vec![
            chunk(&id, 0, &bytes[..PIECE]),
            chunk(&id, PIECE, &bytes[PIECE..2 * PIECE]),
        ],
    )
    .await
    .expect("two pieces");
    assert_eq!((status.received, status.complete), (2 * PIECE as u64, false));

    // A call broken off mid-way: two more pieces arrive, then the client goes away.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut uploader = hub.exchange(SAMR).await;
    let call = tokio::spawn(async move { uploader.upload_chunks(ReceiverStream::new(rx)).await });
    tx.send(chunk(&id, 2 * PIECE, &bytes[2 * PIECE..3 * PIECE]))
        .await
        .expect("open");
    tx.send(chunk(&id, 3 * PIECE, &bytes[3 * PIECE..4 * PIECE]))
        .await
        .expect("open");
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let s = ok(samr.get_upload_status(upload_status(&id)).await);
        if s.received == 4 * PIECE as u64 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the pieces never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.abort();
    let _ = call.await;
    drop(tx);

    // The status says where to resume.
    let status = ok(samr.get_upload_status(upload_status(&id)).await);
    assert_eq!(
        (status.received, status.complete, status.sequence),
        (4 * PIECE as u64, false, 0)
    );
    // Resuming from anywhere else is refused, naming the offset expected.
    let wrong = send_chunks(&mut samr, vec![chunk(&id, 0, &bytes[..PIECE])]).await;
    let wrong = refused(wrong.map(tonic::Response::new), Code::FailedPrecondition);
    assert!(
        wrong.message().contains(&(4 * PIECE).to_string()),
        "{}",
        wrong.message()
    );
    let ahead = send_chunks(&mut samr, vec![chunk(&id, 5 * PIECE, &bytes[5 * PIECE..6 * PIECE])]).await;
    refused(ahead.map(tonic::Response::new), Code::FailedPrecondition);
    assert_eq!(
        ok(samr.get_upload_status(upload_status(&id)).await).received,
        4 * PIECE as u64
    );
    // Nothing is downloadable yet.
    refused(samr.download_file(download(&dataset, name)).await, Code::NotFound);

    let rest: Vec<pb::FileChunk> = (4 * PIECE..bytes.len())
        .step_by(PIECE)
        .map(|at| chunk(&id, at, &bytes[at..(at + PIECE).min(bytes.len())]))
        .collect();
    let done = send_chunks(&mut samr, rest).await.expect("the rest");
    assert_eq!(
        (done.received, done.complete, done.sequence),
        (bytes.len() as u64, true, 1)
    );
    assert_eq!(ok(samr.get_upload_status(upload_status(&id)).await), done);
    // A complete upload takes no more.
    refused(
        send_chunks(&mut samr, vec![chunk(&id, bytes.len(), b"x")])
            .await
            .map(tonic::Response::new),
        Code::FailedPrecondition,
    );

    // Another department downloads it (无条件共享): size and digest first, then the bytes.
    let mut police = hub.exchange(POLICE).await;
    let (size, digest, got, messages) = download_all(&mut police, &dataset, name).await;
    assert_eq!(size, bytes.len() as u64);
    assert_eq!(digest, sha256_hex(&bytes));
    assert_eq!(sha256_hex(&got), digest, "the bytes match the digest");
    assert!(got == bytes, "the bytes are the uploaded file");
    assert!(messages >= 2, "a large file comes in several messages");

    // A broken download resumes from the bytes it has: the first message still describes the
    // whole file, and the rest is exactly the tail.
    let resumed_at = 200 * 1024 + 7;
    let mut stream = ok(police
        .download_file(pb::DownloadFileRequest {
            offset: resumed_at as u64,
            ..download(&dataset, name)
        })
        .await);
    let mut tail = Vec::new();
    let mut first = None;
    while let Some(message) = timeout(GUARD, stream.message())
        .await
        .expect("no stall")
        .expect("the tail")
    {
        first.get_or_insert((message.size, message.sha256.clone()));
        tail.extend(message.data);
    }
    assert_eq!(first, Some((size, digest.clone())));
    assert!(tail == bytes[resumed_at..], "the resumed bytes are the file's tail");
    // At the end there is nothing left but the description; past it is refused.
    let mut at_end = ok(police
        .download_file(pb::DownloadFileRequest {
            offset: size,
            ..download(&dataset, name)
        })
        .await);
    let only = at_end.message().await.expect("an answer").expect("one message");
    assert_eq!((only.size, only.data.len()), (size, 0));
    assert!(at_end.message().await.expect("the end").is_none());
    invalid(
        police
            .download_file(pb::DownloadFileRequest {
                offset: size + 1,
                ..download(&dataset, name)
            })
            .await,
        &["offset"],
    );

    // The file is a change in the dataset's log.
    let log = fetch_all(&mut police, &dataset, 0).await;
    assert_eq!(sequences(&log), [1]);
    assert_eq!(key_of(&log[0]), Json::Array(vec![Json::String(name.into())]));
    let meta = record_of(&log[0]);
    assert_eq!(meta["size"], Json::from(bytes.len() as u64));
    assert_eq!(meta["sha256"], Json::String(sha256_hex(&bytes)));
    assert_eq!(dataset_of(ok(police.get_dataset(get_dataset(&dataset)).await)), (1, 1));

    // A second upload of the same name supersedes the first.
    let newer = file_bytes(1000, 2);
    let second = ok(samr.start_upload(start_upload(&dataset, name, &newer)).await);
    assert_ne!(second.upload_id, id);
    let done = send_chunks(&mut samr, vec![chunk(&second.upload_id, 0, &newer)])
        .await
        .expect("one piece");
    assert_eq!((done.complete, done.sequence), (true, 2));
    let (size, digest, got, _) = download_all(&mut police, &dataset, name).await;
    assert_eq!((size, digest.as_str()), (1000, sha256_hex(&newer).as_str()));
    assert!(got == newer);
    assert_eq!(dataset_of(ok(police.get_dataset(get_dataset(&dataset)).await)), (1, 2));

    // An empty file completes when started.
    let empty = ok(samr.start_upload(start_upload(&dataset, "空.txt", b"")).await);
    assert_eq!((empty.complete, empty.sequence), (true, 3));
    let (size, digest, got, _) = download_all(&mut police, &dataset, "空.txt").await;
    assert_eq!((size, digest, got.len()), (0, sha256_hex(b""), 0));
    assert_eq!(dataset_of(ok(police.get_dataset(get_dataset(&dataset)).await)), (2, 3));
    hub.finish().await;
}

async fn file_uploads_are_checked(backend: Backend) {
    let hub = TestHub::start_with(backend, |config| config.limits.max_file_bytes = 100_000).await;
    hub.import_shared_schemas().await;
    let dataset = hub
        .open_files(SAMR, content("企业年报扫描件", "102001", "年报文件"))
        .await
        .dataset;
    let table = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;
    let bytes = file_bytes(50_000, 3);

    // A wrong digest is found when the last byte arrives; nothing becomes current.
    let mut lying = start_upload(&dataset, "a.bin", &bytes);
    lying.sha256 = sha256_hex(b"something else");
    let upload = ok(samr.start_upload(lying).await);
    let status = send_chunks(
        &mut samr,
        vec![
            chunk(&upload.upload_id, 0, &bytes[..30_000]),
            chunk(&upload.upload_id, 30_000, &bytes[30_000..]),
        ],
    )
    .await;
    let status = refused(status.map(tonic::Response::new), Code::FailedPrecondition);
    assert!(status.message().contains("SHA-256"), "{}", status.message());
    refused(samr.download_file(download(&dataset, "a.bin")).await, Code::NotFound);
    assert_eq!(dataset_of(ok(samr.get_dataset(get_dataset(&dataset)).await)), (0, 0));

    // The limit on file size; a malformed digest; a bad name.
    let mut huge = start_upload(&dataset, "huge.bin", &bytes);
    huge.size = 100_001;
    refused(samr.start_upload(huge).await, Code::ResourceExhausted);
    let mut at_limit = start_upload(&dataset, "limit.bin", &bytes);
    at_limit.size = 100_000;
    ok(samr.start_upload(at_limit).await);
    let mut malformed = start_upload(&dataset, "b.bin", &bytes);
    malformed.sha256 = "abc".into();
    invalid(samr.start_upload(malformed).await, &["sha256"]);
    invalid(
        samr.start_upload(start_upload(&dataset, "../b.bin", &bytes)).await,
        &["file_name"],
    );

    // More bytes than declared.
    let upload = ok(samr.start_upload(start_upload(&dataset, "c.bin", &bytes[..10])).await);
    refused(
        send_chunks(&mut samr, vec![chunk(&upload.upload_id, 0, &bytes[..11])])
            .await
            .map(tonic::Response::new),
        Code::ResourceExhausted,
    );

    // Files go to file datasets, records to table datasets.
    let status = refused(
        samr.start_upload(start_upload(&table, "d.bin", &bytes)).await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains("table"), "{}", status.message());
    refused(
        samr.publish(companies(&dataset, "records", [1])).await,
        Code::FailedPrecondition,
    );

    // Only the provider uploads; another department may not even look at an upload.
    let mut police = hub.exchange(POLICE).await;
    refused(
        police.start_upload(start_upload(&dataset, "e.bin", &bytes)).await,
        Code::PermissionDenied,
    );
    refused(
        police.get_upload_status(upload_status(&upload.upload_id)).await,
        Code::PermissionDenied,
    );
    refused(
        send_chunks(&mut police, vec![chunk(&upload.upload_id, 0, &bytes[..10])])
            .await
            .map(tonic::Response::new),
        Code::PermissionDenied,
    );
    refused(
        samr.get_upload_status(upload_status("no-such-upload")).await,
        Code::NotFound,
    );
    // The right bytes still complete it.
    let done = send_chunks(&mut samr, vec![chunk(&upload.upload_id, 0, &bytes[..10])])
        .await
        .expect("ten bytes");
    assert!(done.complete);
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Stopping

async fn graceful_stop_ends_live_subscriptions_with_unavailable(backend: Backend) {
    let mut hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;
    ok(samr.publish(companies(&dataset, "some", 1..=3)).await);
    let mut police = hub.exchange(POLICE).await;
    let mut idle = ok(police.subscribe(subscribe(&dataset, 0, "", 0)).await);
    receive(&mut idle, 3).await;
    let mut waiting = ok(police.subscribe(subscribe(&dataset, 3, "c", 0)).await);

    // The hub allows 5 s for calls in flight (see TestHub); the open subscriptions end at once
    // instead of running into that limit.
    let stopped = timeout(GUARD, hub.stop()).await.expect("stop returns");
    assert!(stopped.is_ok(), "stop with open subscriptions: {:?}", stopped.err());

    for stream in [&mut idle, &mut waiting] {
        match timeout(GUARD, stream.message()).await.expect("the stream ends") {
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{}", status.message()),
            Ok(other) => panic!("expected UNAVAILABLE, got {other:?}"),
        }
    }
}

/// Stops a hub while a subscriber that read one message holds an unread backlog of ~4 MB: what
/// `stop` returned, and how the subscription then ended for the subscriber.
async fn stop_with_a_stalled_subscriber(
    backend: Backend,
    resumes_during_stop: bool,
) -> (Result<(), xinqiao_hub::ServeError>, String) {
    let mut hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let dataset = hub.open_table(SAMR, enterprise()).await.dataset;
    let mut samr = hub.exchange(SAMR).await;
    // About 4 MB of changes: more than the transport's windows and the hub's queue hold.
    for b in 0..20u64 {
        ok(samr
            .publish(companies(&dataset, &format!("b{b}"), b * 1000..(b + 1) * 1000))
            .await);
    }
    let mut police = hub.exchange(POLICE).await;
    let mut stalled = ok(police.subscribe(subscribe(&dataset, 0, "", 0)).await);
    // It reads one message, then nothing more.
    let first = next_batch(&mut stalled).await.changes.len();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let read_rest = async move {
        let mut seen = first;
        loop {
            match timeout(GUARD, stalled.message()).await.expect("the stream ends") {
                Ok(Some(batch)) => seen += batch.changes.len(),
                Ok(None) => break format!("a clean end of stream (status OK) after {seen} of 20000 changes"),
                Err(status) => break format!("{:?} after {seen} changes: {}", status.code(), status.message()),
            }
        }
    };
    if resumes_during_stop {
        // The subscriber starts reading again while the hub is stopping, within the grace period.
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            read_rest.await
        });
        let stopped = timeout(GUARD, hub.stop()).await.expect("stop returns");
        (stopped, reader.await.expect("reader"))
    } else {
        let stopped = timeout(GUARD, hub.stop()).await.expect("stop returns");
        (stopped, read_rest.await)
    }
}

/// The hub allows 5 s for calls in flight (see TestHub); a subscriber that has stopped reading
/// must not make the stop run into that limit.
async fn graceful_stop_is_not_held_up_by_a_subscriber_that_stopped_reading(backend: Backend) {
    let (stopped, ending) = stop_with_a_stalled_subscriber(backend, false).await;
    assert!(
        stopped.is_ok(),
        "stop returned {stopped:?} with a subscriber that stopped reading (it then saw {ending})"
    );
    // Its connection was cut: an error it resumes after, never a clean end.
    assert!(
        !ending.starts_with("a clean end"),
        "the stalled subscriber saw {ending}"
    );
}

/// Cut off by a stop, a subscription that is being read ends with UNAVAILABLE ("resume from your
/// last sequence"), never as if it were complete. (One that is not read at all until the grace
/// period ends has its connection cut, which the test above covers.)
async fn a_subscription_cut_off_by_a_stop_ends_with_unavailable(backend: Backend) {
    let (stopped, ending) = stop_with_a_stalled_subscriber(backend, true).await;
    assert!(
        ending.starts_with("Unavailable"),
        "the subscriber saw {ending} (stop returned {stopped:?})"
    );
}
