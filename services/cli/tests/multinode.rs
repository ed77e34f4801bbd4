//! Two hub processes on one PostgreSQL database (PostgreSQL only: without
//! XINQIAO_TEST_DATABASE_URL the test says it was skipped and passes).
//!
//! Isolation: the test makes a fresh schema `xq_multinode_<uuid>` with
//! `xinqiao_store::PgStore::open_in_schema` (which also runs the migrations there), then starts
//! both hubs with a database URL whose `options` parameter sets `search_path` to that schema (sqlx
//! passes `options=-c search_path=…` to the server at connect). The cli crate has no SQL client of
//! its own, so the schema is dropped afterwards with `psql` when it is installed; otherwise the test
//! prints the schema's name for removal by hand.
//!
//! Node A is `serve --dev` on a PKI made beforehand with `xinqiao certs init`; node B is started from
//! a TOML configuration naming the same database and, in its [tls] table, the same PKI.

mod support;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;
use tokio::time::timeout;
use xinqiao_proto::v1 as pb;

const PG_URL_VAR: &str = "XINQIAO_TEST_DATABASE_URL";
const BATCHES_PER_NODE: u64 = 25;
const BATCH: u64 = 100;
/// A failure guard only: everything should arrive long before.
const DEADLINE: Duration = Duration::from_secs(300);

/// Drops the test's schema when the test ends, also when it fails.
struct SchemaGuard {
    url: String,
    name: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let dropped = Command::new("psql")
            .arg(&self.url)
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
            .output();
        match dropped {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "could not drop the test schema {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!(
                "psql is not available ({e}); drop the test schema {} by hand",
                self.name
            ),
        }
    }
}

/// `url` with `search_path` set to `schema` on every connection.
fn in_schema(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

fn toml_path(path: &Path) -> String {
    // A TOML literal string: the paths here hold no single quotes.
    format!("'{}'", path.display())
}

/// Follows the dataset through one node until `count` changes have arrived.
async fn follow(mut client: Exchange, dataset: String, count: u64) -> Vec<pb::Change> {
    let mut stream = ok(client
        .subscribe(pb::SubscribeRequest {
            dataset,
            after_sequence: 0,
            consumer: String::new(),
            max_batch: 0,
            purpose: PURPOSE.into(),
            grant_id: String::new(),
        })
        .await);
    let mut changes = Vec::new();
    while (changes.len() as u64) < count {
        match stream.message().await {
            Ok(Some(batch)) => changes.extend(batch.changes),
            Ok(None) => panic!("the subscription ended after {} changes", changes.len()),
            Err(status) => panic!(
                "the subscription failed after {} changes: {:?} {}",
                changes.len(),
                status.code(),
                status.message()
            ),
        }
    }
    changes
}

/// Publishes `BATCHES_PER_NODE` batches through one node; the sequences each was given.
async fn publish_through(mut client: Exchange, dataset: String, node: &'static str) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    for b in 0..BATCHES_PER_NODE {
        let offset = if node == "a" { 0 } else { 1_000_000 };
        let changes = (0..BATCH)
            .map(|i| upsert(record(offset + b * BATCH + i, &format!("mn-{node}-{b}-{i}"))))
            .collect();
        let answer = ok(client
            .publish(publish_request(&dataset, &format!("mn-{node}-{b}"), changes))
            .await);
        assert_eq!(answer.accepted as u64, BATCH, "{answer:?}");
        ranges.push((answer.first_sequence, answer.last_sequence));
        // Interleave with the other node.
        tokio::task::yield_now().await;
    }
    ranges
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_database_deliver_every_record_once_in_order() {
    let url = match std::env::var(PG_URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            println!("skipping two_nodes_on_one_database_deliver_every_record_once_in_order: {PG_URL_VAR} is not set");
            return;
        }
    };
    let schema = format!("xq_multinode_{}", uuid::Uuid::new_v4().simple());
    let _guard = SchemaGuard {
        url: url.clone(),
        name: schema.clone(),
    };
    let store = xinqiao_store::PgStore::open_in_schema(&url, &schema)
        .await
        .unwrap_or_else(|e| panic!("{PG_URL_VAR} is set but the store does not open: {e}"));
    store.close().await;
    let node_url = in_schema(&url, &schema);

    let tmp = tempfile::tempdir().expect("temporary directory");
    let shared = tmp.path().join("a");
    let pki = shared.join("pki");
    let init = Command::new(env!("CARGO_BIN_EXE_xinqiao"))
        .args(["certs", "init", "--out"])
        .arg(&pki)
        .output()
        .expect("run xinqiao certs init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));

    let (port_a, port_b) = (free_port(), free_port());
    let args_a: Vec<OsString> = vec![
        "--dev".into(),
        "--data".into(),
        shared.clone().into(),
        "--database-url".into(),
        node_url.clone().into(),
    ];
    let mut node_a = HubProcess::start(port_a, &args_a, &tmp.path().join("a.log")).await;

    let b_dir: PathBuf = tmp.path().join("b");
    std::fs::create_dir_all(&b_dir).expect("node B's data directory");
    let config = tmp.path().join("b.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {}\ndatabase_url = '{node_url}'\n\n[tls]\nca = {}\ncert = {}\nkey = {}\n",
            toml_path(&b_dir),
            toml_path(&xinqiao_hub::pki::ca_cert_path(&pki)),
            toml_path(&xinqiao_hub::pki::server_files(&pki).cert),
            toml_path(&xinqiao_hub::pki::server_files(&pki).key),
        ),
    )
    .expect("write node B's configuration");
    let args_b: Vec<OsString> = vec!["--config".into(), config.into()];
    let mut node_b = HubProcess::start(port_b, &args_b, &tmp.path().join("b.log")).await;

    let dataset = open_dataset(port_a, &pki, "企业登记信息").await;
    let total = 2 * BATCHES_PER_NODE * BATCH;

    // Both nodes see the dataset made through A.
    let mut via_b = exchange_when_up(port_b, &pki, POLICE).await;
    let d = ok(via_b
        .get_dataset(pb::GetDatasetRequest {
            dataset: dataset.clone(),
        })
        .await);
    assert_eq!(d.provider_code, SAMR);

    let sub_a = tokio::spawn(follow(
        exchange_when_up(port_a, &pki, POLICE).await,
        dataset.clone(),
        total,
    ));
    let sub_b = tokio::spawn(follow(
        exchange_when_up(port_b, &pki, POLICE).await,
        dataset.clone(),
        total,
    ));
    let pub_a = tokio::spawn(publish_through(
        exchange_when_up(port_a, &pki, SAMR).await,
        dataset.clone(),
        "a",
    ));
    let pub_b = tokio::spawn(publish_through(
        exchange_when_up(port_b, &pki, SAMR).await,
        dataset.clone(),
        "b",
    ));

    let (ranges_a, ranges_b) = timeout(DEADLINE, async { (pub_a.await, pub_b.await) })
        .await
        .expect("the publishers finish");
    let (ranges_a, ranges_b) = (ranges_a.expect("publisher A"), ranges_b.expect("publisher B"));
    // The batches of the two nodes split 1..N between them, each a consecutive range.
    let mut ranges: Vec<(u64, u64, char)> = ranges_a
        .iter()
        .map(|(f, l)| (*f, *l, 'a'))
        .chain(ranges_b.iter().map(|(f, l)| (*f, *l, 'b')))
        .collect();
    ranges.sort_unstable();
    // How often the log passes from one node's batch to the other's: how interleaved they were.
    let switches = ranges.windows(2).filter(|w| w[0].2 != w[1].2).count();
    let mut next = 1;
    for (first, last, _) in &ranges {
        assert_eq!((*first, *last), (next, next + BATCH - 1), "batches tile the sequence");
        next = last + 1;
    }
    assert_eq!(next, total + 1);

    let expected_names: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|node| (0..BATCHES_PER_NODE).flat_map(move |b| (0..BATCH).map(move |i| format!("mn-{node}-{b}-{i}"))))
        .collect();
    for (node, subscriber) in [("A", sub_a), ("B", sub_b)] {
        let changes = timeout(DEADLINE, subscriber)
            .await
            .unwrap_or_else(|_| panic!("the subscriber on node {node} did not get all {total} changes"))
            .expect("subscriber");
        let sequences: Vec<u64> = changes.iter().map(|c| c.sequence).collect();
        if let Some(w) = sequences.windows(2).find(|w| w[1] != w[0] + 1) {
            panic!("node {node}: {} followed {} (a gap or a reordering)", w[1], w[0]);
        }
        assert!(
            sequences.iter().copied().eq(1..=total),
            "node {node}: the subscriber saw 1..{total} in order: first {:?}, last {:?}, {} changes",
            sequences.first(),
            sequences.last(),
            sequences.len()
        );
        let mut counts: HashMap<String, u32> = HashMap::new();
        for change in &changes {
            *counts.entry(name_of(change)).or_default() += 1;
        }
        let missing: Vec<&String> = expected_names.iter().filter(|n| !counts.contains_key(*n)).collect();
        let doubled: Vec<(&String, &u32)> = counts.iter().filter(|(_, n)| **n != 1).collect();
        assert!(
            missing.is_empty() && doubled.is_empty() && counts.len() == expected_names.len(),
            "node {node}: missing {missing:?}, more than once {doubled:?}"
        );
    }

    // Both nodes answer the same log.
    let mut via_a = exchange_when_up(port_a, &pki, POLICE).await;
    let log_a = fetch_all(&mut via_a, &dataset).await;
    let log_b = fetch_all(&mut via_b, &dataset).await;
    assert_eq!(log_a.len() as u64, total);
    assert!(log_a == log_b, "the two nodes serve the same log");
    println!(
        "multinode: 2 nodes, {} batches of {BATCH} through each, {total} records, {switches} switches between \
         the nodes' batches in the log; both subscribers saw 1..{total} once, in order",
        BATCHES_PER_NODE
    );
    node_a.kill();
    node_b.kill();
}
