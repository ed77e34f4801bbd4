//! Faults (issue #15, item 5): `kill -9` of a hub process during each write path, on SQLite and
//! on PostgreSQL. Five workers keep one write path busy each, as real clients would:
//!
//! - publish: idempotent batches, retried with the same key until acknowledged;
//! - upload: files sent with UploadChunks, a few chunks per call; after a call that did not get
//!   through, GetUploadStatus says where to resume;
//! - approve: HRSS applies for SAMR's conditionally shared dataset and SAMR approves;
//! - revoke: SAMR revokes the grants the approvals issued;
//! - audit append: POLICE fetches records of an open dataset, a call whose only write is its audit
//!   event.
//!
//! Each round waits a varied time, then until the round's path has a call in flight, and kills
//! the hub with SIGKILL; the workers are held back (a gate; calls already sent fail with the hub)
//! while the hub starts again and the test checks, before anything is retried, that:
//!
//! - the audit chain verifies intact (VerifyChain as the admin; dev mode keys it with
//!   DATA/pki/audit.keys), and every acknowledged call has its audit event;
//! - the log holds sequences 1..N without a gap, each acknowledged batch exactly where its
//!   acknowledgement said, the batch cut by the kill whole or not at all, and a batch is in the
//!   log exactly when its commit event is in the trail;
//! - the upload cut by the kill has received at least what was acknowledged and at most what was
//!   sent, at a chunk boundary; each completed file downloads with the declared SHA-256;
//! - every acknowledged approval is there with its grant, every acknowledged revocation is there;
//!   no grant exists without its request approved and naming it, no approved request without its
//!   grant, and a grant is active with no revocation detail or revoked with all of it.
//!
//! Then the workers go on and retry what was cut (the retries find approvals and revocations that
//! committed without an answer). After the last round the same checks run once more.
//!
//! Publishing with a follower under kill -9 is crash.rs (SQLite); here the publish path adds the
//! audit trail's side and PostgreSQL. The PostgreSQL test runs when XINQIAO_TEST_DATABASE_URL is
//! set and says it was skipped otherwise.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::*;
use tokio::time::{Instant, timeout};
use tonic::transport::Channel;
use tonic::{Code, Status};
use xinqiao_hub::pki;
use xinqiao_proto::v1 as pb;

/// 市人力资源和社会保障局: the applicant for SAMR's conditionally shared dataset.
const HRSS: &str = "11330100MB0003003M";
/// Kills: each path is the target of three.
const ROUNDS: usize = 15;
const BATCH: u64 = 20;
/// Files: not a whole number of chunks, sent a few chunks per UploadChunks call.
const FILE_SIZE: usize = 200 * 1024 + 77;
const CHUNK: usize = 16 * 1024;
const CHUNKS_PER_CALL: usize = 3;
/// Between two calls of a worker: keeps the data a size the checks read quickly.
const PACE: Duration = Duration::from_millis(15);
const GATE_POLL: Duration = Duration::from_millis(5);
const REVOKE_REASON: &str = "故障测试：撤销授权";
/// Failure guards: one call, one wait for a condition, and each test.
const CALL_GUARD: Duration = Duration::from_secs(20);
const WAIT_GUARD: Duration = Duration::from_secs(30);
const TEST_GUARD: Duration = Duration::from_secs(170);

/// The write paths under test, and the calls around them (starting an upload, its status,
/// applying for access, reading back), which are held back by the gate like the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Publish,
    Upload,
    Approve,
    Revoke,
    AuditAppend,
    Other,
}

const PATHS: usize = 6;
const TARGETS: [Path; 5] = [
    Path::Publish,
    Path::Upload,
    Path::Approve,
    Path::Revoke,
    Path::AuditAppend,
];

#[derive(Default)]
struct PublishLog {
    /// Batch number → the first and last sequence of its acknowledgement.
    acked: BTreeMap<u64, (u64, u64)>,
    /// The batch sent and not yet acknowledged.
    pending: Option<u64>,
    replayed: u64,
}

/// The upload in progress, as its client knows it.
struct Current {
    id: String,
    name: String,
    /// Bytes the last answer said were received.
    acked: u64,
    /// The end of the chunks sent so far.
    sent: u64,
}

#[derive(Default)]
struct UploadLog {
    current: Option<Current>,
    /// Completed files: name, SHA-256, sequence, and whether the test has downloaded it.
    completed: Vec<(String, String, u64, bool)>,
    /// Where an interrupted upload resumed: (acknowledged, sent, received as the status said).
    resumed: Vec<(u64, u64, u64)>,
}

#[derive(Default)]
struct AccessLog {
    /// Request → grant, for approvals that were acknowledged.
    approved: BTreeMap<String, String>,
    /// Grants whose revocation was acknowledged.
    revoked: BTreeSet<String>,
    /// Grants issued and not yet revoked: the revoker's queue.
    to_revoke: VecDeque<String>,
    /// Approvals and revocations that committed but whose answer the kill cut off.
    committed_unanswered: u64,
}

struct Shared {
    port: u16,
    pki: PathBuf,
    /// SAMR's unconditionally shared table dataset (publish, audited reads), its file dataset
    /// and its conditionally shared table dataset (access).
    table: String,
    files: String,
    conditional: String,
    /// Set while the hub is killed and checked: no call starts.
    paused: AtomicBool,
    stop: AtomicBool,
    in_flight: [AtomicUsize; PATHS],
    /// Calls that did not get through, by path.
    lost: [AtomicU64; PATHS],
    /// Acknowledged calls: (request id, action), each of which must have its audit event.
    answered: Mutex<Vec<(String, &'static str)>>,
    internal_errors: Mutex<Vec<String>>,
    /// Things a worker saw that break a promise.
    violations: Mutex<Vec<String>>,
    publish: Mutex<PublishLog>,
    upload: Mutex<UploadLog>,
    access: Mutex<AccessLog>,
}

/// What became of one call.
enum Sent<T> {
    Answered(T),
    /// The hub's answer to the request itself.
    Refused(Status),
    /// It did not get through: the hub died or was down.
    Lost,
}

impl Shared {
    /// Counts a call of `path` in flight once the gate is open. The count goes up before the
    /// gate is read, so once the test has closed the gate and seen no call in flight, none starts.
    async fn begin(&self, path: Path) {
        loop {
            self.in_flight[path as usize].fetch_add(1, SeqCst);
            if !self.paused.load(SeqCst) {
                return;
            }
            self.in_flight[path as usize].fetch_sub(1, SeqCst);
            tokio::time::sleep(GATE_POLL).await;
        }
    }

    fn end(&self, path: Path) {
        self.in_flight[path as usize].fetch_sub(1, SeqCst);
    }

    fn busy(&self) -> usize {
        self.in_flight.iter().map(|n| n.load(SeqCst)).sum()
    }

    fn answered(&self, request_id: &str, action: &'static str) {
        self.answered
            .lock()
            .expect("log")
            .push((request_id.to_string(), action));
    }

    fn violation(&self, what: String) {
        self.violations.lock().expect("log").push(what);
    }

    /// One call on `path` as `files`' holder over the worker's channel (made when needed).
    async fn send<T, F, Fut>(&self, path: Path, slot: &mut Option<Channel>, files: &pki::CertFiles, call: F) -> Sent<T>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.begin(path).await;
        let sent = self.send_now(slot, files, call).await;
        self.end(path);
        if matches!(sent, Sent::Lost) {
            self.lost[path as usize].fetch_add(1, SeqCst);
        }
        sent
    }

    async fn send_now<T, F, Fut>(&self, slot: &mut Option<Channel>, files: &pki::CertFiles, call: F) -> Sent<T>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        if slot.is_none() {
            *slot = timeout(CALL_GUARD, channel(self.port, &self.pki, files.clone()))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(ch) = slot.clone() else { return Sent::Lost };
        match timeout(CALL_GUARD, call(ch)).await {
            Ok(Ok(answer)) => Sent::Answered(answer.into_inner()),
            Ok(Err(status)) if is_refusal(&status) => Sent::Refused(status),
            Ok(Err(status)) => {
                if is_hub_internal_error(&status) {
                    self.internal_errors
                        .lock()
                        .expect("log")
                        .push(status.message().to_string());
                }
                *slot = None;
                Sent::Lost
            }
            Err(_) => {
                *slot = None;
                Sent::Lost
            }
        }
    }

    fn files(&self, code: &str) -> pki::CertFiles {
        pki::department_files(&self.pki, code)
    }
}

fn batch_name(b: u64, i: u64) -> String {
    format!("kill-{b}-{i}")
}

fn batch_key(b: u64) -> String {
    format!("kill-{b}")
}

fn batch_request(dataset: &str, b: u64) -> pb::PublishRequest {
    let changes = (0..BATCH)
        .map(|i| upsert(record(b * BATCH + i, &batch_name(b, i))))
        .collect();
    publish_request(dataset, &batch_key(b), changes)
}

/// Publishes batches `kill-0`, `kill-1`… as SAMR, each until it is acknowledged.
async fn publisher(shared: Arc<Shared>) {
    let files = shared.files(SAMR);
    let mut slot = None;
    let mut attempt = 0u64;
    let mut b = 0u64;
    while !shared.stop.load(SeqCst) {
        shared.publish.lock().expect("log").pending = Some(b);
        loop {
            attempt += 1;
            let id = format!("kp-{b}-{attempt}");
            let request = with_request_id(batch_request(&shared.table, b), &id);
            let sent = shared
                .send(Path::Publish, &mut slot, &files, |ch| async move {
                    Exchange::new(ch).publish(request).await
                })
                .await;
            match sent {
                Sent::Answered(answer) => {
                    if (answer.accepted as u64, answer.last_sequence + 1 - answer.first_sequence) != (BATCH, BATCH) {
                        shared.violation(format!("batch {b} answered {answer:?}"));
                    }
                    let mut log = shared.publish.lock().expect("log");
                    log.acked.insert(b, (answer.first_sequence, answer.last_sequence));
                    log.replayed += u64::from(answer.replayed);
                    log.pending = None;
                    shared.answered(&id, "Publish");
                    break;
                }
                Sent::Refused(status) => panic!("batch {b} refused: {:?} {}", status.code(), status.message()),
                Sent::Lost => {}
            }
        }
        b += 1;
        tokio::time::sleep(PACE).await;
    }
}

/// The bytes of file `n`: varied, and the same every time.
fn file_bytes(n: u64) -> Vec<u8> {
    (0..FILE_SIZE as u64)
        .map(|i| (splitmix(n << 32 | i / 8) >> (8 * (i % 8))) as u8)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Uploads files `kill-N.bin` to the file dataset as SAMR, a few chunks per call; after a call
/// that did not get through, asks the upload's status and resumes where it says.
async fn uploader(shared: Arc<Shared>) {
    let files = shared.files(SAMR);
    let mut slot = None;
    let mut n = 0u64;
    let mut calls = 0u64;
    while !shared.stop.load(SeqCst) {
        let data = file_bytes(n);
        let sha = hex(&Sha256::digest(&data));
        let name = format!("kill-{n}.bin");
        let start = pb::StartUploadRequest {
            dataset: shared.files.clone(),
            file_name: name.clone(),
            size: data.len() as u64,
            sha256: sha.clone(),
        };
        let upload_id = loop {
            calls += 1;
            let id = format!("ku-start-{n}-{calls}");
            let request = with_request_id(start.clone(), &id);
            match shared
                .send(Path::Other, &mut slot, &files, |ch| async move {
                    Exchange::new(ch).start_upload(request).await
                })
                .await
            {
                Sent::Answered(status) => {
                    shared.answered(&id, "StartUpload");
                    break status.upload_id;
                }
                Sent::Refused(status) => panic!("start upload {name}: {:?} {}", status.code(), status.message()),
                Sent::Lost => {}
            }
        };
        shared.upload.lock().expect("log").current = Some(Current {
            id: upload_id.clone(),
            name: name.clone(),
            acked: 0,
            sent: 0,
        });
        let mut offset = 0usize;
        let mut interrupted = false;
        let sequence = loop {
            if interrupted {
                let request = pb::GetUploadStatusRequest {
                    upload_id: upload_id.clone(),
                };
                let status = match shared
                    .send(Path::Other, &mut slot, &files, |ch| async move {
                        Exchange::new(ch).get_upload_status(request).await
                    })
                    .await
                {
                    Sent::Answered(status) => status,
                    Sent::Refused(status) => {
                        panic!("upload status of {name}: {:?} {}", status.code(), status.message())
                    }
                    Sent::Lost => continue,
                };
                interrupted = false;
                let mut log = shared.upload.lock().expect("log");
                let current = log.current.as_ref().expect("an upload in progress");
                let (acked, sent) = (current.acked, current.sent);
                if status.received < acked || status.received > sent {
                    shared.violation(format!(
                        "{name}: the status says {} bytes received; {acked} were acknowledged and {sent} sent",
                        status.received
                    ));
                }
                if status.received as usize % CHUNK != 0 && status.received as usize != FILE_SIZE {
                    shared.violation(format!("{name}: resumes at {}, inside a chunk", status.received));
                }
                log.resumed.push((acked, sent, status.received));
                if status.complete {
                    break status.sequence;
                }
                offset = status.received as usize;
            }
            let end = (offset + CHUNK * CHUNKS_PER_CALL).min(FILE_SIZE);
            let chunks: Vec<pb::FileChunk> = (offset..end)
                .step_by(CHUNK)
                .map(|at| pb::FileChunk {
                    upload_id: upload_id.clone(),
                    offset: at as u64,
                    data: data[at..(at + CHUNK).min(end)].to_vec(),
                })
                .collect();
            if let Some(current) = shared.upload.lock().expect("log").current.as_mut() {
                current.sent = current.sent.max(end as u64);
            }
            calls += 1;
            let id = format!("ku-{n}-{calls}");
            let request = with_request_id(tokio_stream::iter(chunks), &id);
            match shared
                .send(Path::Upload, &mut slot, &files, |ch| async move {
                    Exchange::new(ch).upload_chunks(request).await
                })
                .await
            {
                Sent::Answered(status) => {
                    shared.answered(&id, "UploadChunks");
                    if status.received != end as u64 {
                        shared.violation(format!(
                            "{name}: sent up to {end}, the answer says {} received",
                            status.received
                        ));
                    }
                    if let Some(current) = shared.upload.lock().expect("log").current.as_mut() {
                        current.acked = status.received;
                    }
                    if status.complete {
                        break status.sequence;
                    }
                    offset = end;
                }
                Sent::Refused(status) => panic!("chunks of {name}: {:?} {}", status.code(), status.message()),
                Sent::Lost => interrupted = true,
            }
            tokio::time::sleep(PACE).await;
        };
        let mut log = shared.upload.lock().expect("log");
        log.current = None;
        log.completed.push((name, sha, sequence, false));
        drop(log);
        n += 1;
    }
}

fn application(dataset: &str) -> pb::AccessApplication {
    let until = (chrono::Utc::now() + chrono::Duration::days(30)).format("%Y-%m-%d");
    pb::AccessApplication {
        dataset: dataset.into(),
        purpose: "社会保险参保登记时核验企业登记信息".into(),
        scope: "本局社会保险经办业务".into(),
        fields: vec!["uscc".into(), "name".into()],
        period_from: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        period_until: until.to_string(),
        business_system: "社会保险经办系统".into(),
        operations: vec![],
    }
}

/// HRSS applies for SAMR's conditionally shared dataset and SAMR approves, again and again. An
/// approval retried after a kill may find the request already answered: the lost call committed.
async fn approver(shared: Arc<Shared>) {
    let (hrss, samr) = (shared.files(HRSS), shared.files(SAMR));
    let (mut hrss_slot, mut samr_slot) = (None, None);
    let mut calls = 0u64;
    while !shared.stop.load(SeqCst) {
        let request_id = loop {
            calls += 1;
            let id = format!("ka-apply-{calls}");
            let request = with_request_id(
                pb::RequestAccessRequest {
                    application: Some(application(&shared.conditional)),
                },
                &id,
            );
            match shared
                .send(Path::Other, &mut hrss_slot, &hrss, |ch| async move {
                    AccessClient::new(ch).request_access(request).await
                })
                .await
            {
                Sent::Answered(r) => {
                    shared.answered(&id, "RequestAccess");
                    break r.request_id;
                }
                Sent::Refused(status) => panic!("access request: {:?} {}", status.code(), status.message()),
                Sent::Lost => {}
            }
        };
        loop {
            calls += 1;
            let id = format!("ka-{calls}");
            let request = with_request_id(
                pb::ApproveRequestRequest {
                    request_id: request_id.clone(),
                    note: "同意，限本局经办使用".into(),
                    ..Default::default()
                },
                &id,
            );
            match shared
                .send(Path::Approve, &mut samr_slot, &samr, |ch| async move {
                    AccessClient::new(ch).approve_request(request).await
                })
                .await
            {
                Sent::Answered(r) => {
                    if r.state != pb::RequestState::Approved as i32 || r.grant_id.is_empty() {
                        shared.violation(format!("approval of {request_id} answered {r:?}"));
                    }
                    shared.answered(&id, "ApproveRequest");
                    let mut log = shared.access.lock().expect("log");
                    log.approved.insert(request_id.clone(), r.grant_id.clone());
                    log.to_revoke.push_back(r.grant_id);
                    break;
                }
                Sent::Refused(status) if status.code() == Code::FailedPrecondition => {
                    // Answered already: by the call the kill cut off.
                    let grant = committed_approval(&shared, &mut samr_slot, &samr, &request_id).await;
                    let mut log = shared.access.lock().expect("log");
                    log.committed_unanswered += 1;
                    log.to_revoke.push_back(grant);
                    break;
                }
                Sent::Refused(status) => panic!("approval: {:?} {}", status.code(), status.message()),
                Sent::Lost => {}
            }
        }
        tokio::time::sleep(PACE).await;
    }
}

/// The grant of a request whose approval committed without an answer.
async fn committed_approval(
    shared: &Shared,
    slot: &mut Option<Channel>,
    files: &pki::CertFiles,
    request_id: &str,
) -> String {
    loop {
        let request = pb::GetRequestRequest {
            request_id: request_id.into(),
        };
        match shared
            .send(Path::Other, slot, files, |ch| async move {
                AccessClient::new(ch).get_request(request).await
            })
            .await
        {
            Sent::Answered(r) if r.state == pb::RequestState::Approved as i32 && !r.grant_id.is_empty() => {
                return r.grant_id;
            }
            Sent::Answered(r) => panic!("approval refused as answered, but the request is {r:?}"),
            Sent::Refused(status) => panic!("get request: {:?} {}", status.code(), status.message()),
            Sent::Lost => {}
        }
    }
}

/// SAMR revokes each grant the approvals issued. A revocation retried after a kill may find the
/// grant revoked already: the lost call committed.
async fn revoker(shared: Arc<Shared>) {
    let samr = shared.files(SAMR);
    let mut slot = None;
    let mut calls = 0u64;
    while !shared.stop.load(SeqCst) {
        let next = shared.access.lock().expect("log").to_revoke.pop_front();
        let Some(grant_id) = next else {
            tokio::time::sleep(PACE).await;
            continue;
        };
        loop {
            calls += 1;
            let id = format!("kr-{calls}");
            let request = with_request_id(
                pb::RevokeGrantRequest {
                    grant_id: grant_id.clone(),
                    reason: REVOKE_REASON.into(),
                },
                &id,
            );
            match shared
                .send(Path::Revoke, &mut slot, &samr, |ch| async move {
                    AccessClient::new(ch).revoke_grant(request).await
                })
                .await
            {
                Sent::Answered(g) => {
                    if g.state != pb::GrantState::Revoked as i32 {
                        shared.violation(format!("revocation of {grant_id} answered {g:?}"));
                    }
                    shared.answered(&id, "RevokeGrant");
                    shared.access.lock().expect("log").revoked.insert(grant_id.clone());
                    break;
                }
                Sent::Refused(status) if status.code() == Code::FailedPrecondition => {
                    shared.access.lock().expect("log").committed_unanswered += 1;
                    break;
                }
                Sent::Refused(status) => panic!("revocation: {:?} {}", status.code(), status.message()),
                Sent::Lost => {}
            }
        }
        tokio::time::sleep(PACE).await;
    }
}

/// POLICE reads the open dataset: each answered Fetch must leave its audit event.
async fn reader(shared: Arc<Shared>) {
    let police = shared.files(POLICE);
    let mut slot = None;
    let mut calls = 0u64;
    while !shared.stop.load(SeqCst) {
        calls += 1;
        let id = format!("kf-{calls}");
        let request = with_request_id(
            pb::FetchRequest {
                dataset: shared.table.clone(),
                after_sequence: calls % 50,
                limit: 5,
                purpose: PURPOSE.into(),
                grant_id: String::new(),
            },
            &id,
        );
        match shared
            .send(Path::AuditAppend, &mut slot, &police, |ch| async move {
                Exchange::new(ch).fetch(request).await
            })
            .await
        {
            Sent::Answered(_) => shared.answered(&id, "Fetch"),
            Sent::Refused(status) => panic!("fetch: {:?} {}", status.code(), status.message()),
            Sent::Lost => {}
        }
        tokio::time::sleep(PACE).await;
    }
}

/// What the test has read of the audit trail so far.
#[derive(Default)]
struct Trail {
    /// The highest sequence read.
    read_up_to: u64,
    /// Request id → (action, outcome) of each event.
    by_request: HashMap<String, Vec<(String, String)>>,
    /// Idempotency keys of the Publish events that committed a batch (not the replays).
    committed_batches: HashMap<String, u32>,
}

impl Trail {
    async fn catch_up(&mut self, audit: &mut AuditClient) {
        for e in audit_events_after(audit, self.read_up_to).await {
            self.read_up_to = self.read_up_to.max(e.sequence);
            if e.action == "Publish" && e.outcome == "OK" {
                let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
                if detail["replayed"] != serde_json::Value::Bool(true)
                    && let Some(key) = detail["idempotency_key"].as_str()
                {
                    *self.committed_batches.entry(key.to_string()).or_default() += 1;
                }
            }
            self.by_request
                .entry(e.request_id)
                .or_default()
                .push((e.action, e.outcome));
        }
    }
}

/// All pages of a listing.
async fn all_requests(access: &mut AccessClient, dataset: &str) -> Vec<pb::AccessRequest> {
    let (mut all, mut page_token) = (Vec::new(), String::new());
    loop {
        let page = ok(access
            .list_requests(pb::ListRequestsRequest {
                dataset: dataset.into(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await);
        all.extend(page.requests);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

async fn all_grants(access: &mut AccessClient, dataset: &str) -> Vec<pb::AccessGrant> {
    let (mut all, mut page_token) = (Vec::new(), String::new());
    loop {
        let page = ok(access
            .list_grants(pb::ListGrantsRequest {
                dataset: dataset.into(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await);
        all.extend(page.grants);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Checks every promise while no worker call is in flight (see the module comment).
async fn check_state(shared: &Shared, trail: &mut Trail, when: &str) {
    let (port, pki_dir) = (shared.port, shared.pki.as_path());
    let mut audit = audit_admin_when_up(port, pki_dir).await;
    let verdict = assert_audit_chain_intact(&mut audit, when).await;

    // Every acknowledged call has its audit event.
    trail.catch_up(&mut audit).await;
    let answered = shared.answered.lock().expect("log").clone();
    for (request_id, action) in &answered {
        let events = trail.by_request.get(request_id);
        assert!(
            events.is_some_and(|es| es.iter().any(|(a, o)| a == action && o == "OK")),
            "{when}: the acknowledged {action} call {request_id} has no audit event: {events:?}"
        );
    }

    // The log: gap-free, every acknowledged batch where it was acknowledged, the one cut by the
    // kill whole or absent, and each batch with exactly one commit event.
    let mut reader = exchange_when_up(port, pki_dir, POLICE).await;
    let changes = fetch_all(&mut reader, &shared.table).await;
    let total = changes.len() as u64;
    assert!(
        changes.iter().map(|c| c.sequence).eq(1..=total),
        "{when}: the log holds sequences 1..{total} without a gap"
    );
    let mut at: HashMap<String, u64> = HashMap::new();
    for change in &changes {
        let name = name_of(change);
        if let Some(before) = at.insert(name.clone(), change.sequence) {
            panic!(
                "{when}: {name} is in the log twice, at {before} and {}",
                change.sequence
            );
        }
    }
    let (acked, pending) = {
        let log = shared.publish.lock().expect("log");
        (log.acked.clone(), log.pending)
    };
    let mut in_log = 0u64;
    for (b, (first, _)) in &acked {
        for i in 0..BATCH {
            assert_eq!(
                at.get(&batch_name(*b, i)),
                Some(&(first + i)),
                "{when}: acknowledged batch {b} record {i} is where its acknowledgement said"
            );
        }
        in_log += 1;
    }
    if let Some(b) = pending.filter(|b| !acked.contains_key(b)) {
        let present = (0..BATCH).filter(|i| at.contains_key(&batch_name(b, *i))).count() as u64;
        assert!(
            present == 0 || present == BATCH,
            "{when}: batch {b}, cut by the kill, is in the log in part: {present} of {BATCH} records"
        );
        in_log += u64::from(present == BATCH);
    }
    assert_eq!(
        in_log * BATCH,
        total,
        "{when}: the log holds nothing but the batches sent"
    );
    for b in acked.keys().copied().chain(pending) {
        let logged = at.contains_key(&batch_name(b, 0));
        let events = trail.committed_batches.get(&batch_key(b)).copied().unwrap_or(0);
        assert_eq!(
            events,
            u32::from(logged),
            "{when}: batch {b} (in the log: {logged}) has {events} commit events in the trail"
        );
    }

    // Uploads: the one in progress has what was acknowledged, at most what was sent; each
    // completed file downloads whole with its SHA-256.
    let mut samr = exchange_when_up(port, pki_dir, SAMR).await;
    let current = shared
        .upload
        .lock()
        .expect("log")
        .current
        .as_ref()
        .map(|c| (c.id.clone(), c.name.clone(), c.acked, c.sent));
    if let Some((id, name, acked, sent)) = current {
        let status = ok(samr
            .get_upload_status(pb::GetUploadStatusRequest { upload_id: id })
            .await);
        assert!(
            (acked..=sent).contains(&status.received),
            "{when}: {name} has {} bytes; {acked} were acknowledged, {sent} sent",
            status.received
        );
    }
    let unchecked: Vec<(usize, String, String, u64)> = shared
        .upload
        .lock()
        .expect("log")
        .completed
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.3)
        .map(|(i, c)| (i, c.0.clone(), c.1.clone(), c.2))
        .collect();
    for (i, name, sha, sequence) in unchecked {
        let (size, digest) = download(&mut samr, &shared.files, &name).await;
        assert_eq!(
            (size, digest.as_str()),
            (FILE_SIZE as u64, sha.as_str()),
            "{when}: {name} (sequence {sequence}) downloads whole"
        );
        shared.upload.lock().expect("log").completed[i].3 = true;
    }

    // Access: requests and grants agree, and what was acknowledged is there.
    let admin = channel(port, pki_dir, pki::admin_files(pki_dir))
        .await
        .expect("connect as the admin");
    let mut access = AccessClient::new(admin);
    let requests: HashMap<String, pb::AccessRequest> = all_requests(&mut access, &shared.conditional)
        .await
        .into_iter()
        .map(|r| (r.request_id.clone(), r))
        .collect();
    let grants: HashMap<String, pb::AccessGrant> = all_grants(&mut access, &shared.conditional)
        .await
        .into_iter()
        .map(|g| (g.grant_id.clone(), g))
        .collect();
    for g in grants.values() {
        let request = requests.get(&g.request_id);
        assert!(
            request.is_some_and(|r| r.state == pb::RequestState::Approved as i32 && r.grant_id == g.grant_id),
            "{when}: grant {} exists without its request approved and naming it: {request:?}",
            g.grant_id
        );
        let revoked_parts = [
            g.revoked_at.is_some(),
            !g.revoked_by.is_empty(),
            !g.revoke_reason.is_empty(),
        ];
        if g.state == pb::GrantState::Revoked as i32 {
            assert!(
                revoked_parts.iter().all(|p| *p) && g.revoke_reason == REVOKE_REASON,
                "{when}: grant {} is revoked in part: {g:?}",
                g.grant_id
            );
        } else {
            assert!(
                g.state == pb::GrantState::Active as i32 && !revoked_parts.iter().any(|p| *p),
                "{when}: grant {} is neither active nor revoked whole: {g:?}",
                g.grant_id
            );
        }
    }
    for r in requests.values() {
        if r.state == pb::RequestState::Approved as i32 {
            assert!(
                grants.contains_key(&r.grant_id) && r.answered_at.is_some() && !r.answered_by.is_empty(),
                "{when}: request {} is approved without its grant: {r:?}",
                r.request_id
            );
        } else {
            assert!(
                r.state == pb::RequestState::Pending as i32 && r.grant_id.is_empty() && r.answered_at.is_none(),
                "{when}: request {} is neither pending nor approved whole: {r:?}",
                r.request_id
            );
        }
    }
    let (approved, revoked) = {
        let log = shared.access.lock().expect("log");
        (log.approved.clone(), log.revoked.clone())
    };
    for (request_id, grant_id) in &approved {
        let r = requests.get(request_id);
        assert!(
            r.is_some_and(|r| r.state == pb::RequestState::Approved as i32 && &r.grant_id == grant_id),
            "{when}: the acknowledged approval of {request_id} is lost: {r:?}"
        );
    }
    for grant_id in &revoked {
        let g = grants.get(grant_id);
        assert!(
            g.is_some_and(|g| g.state == pb::GrantState::Revoked as i32),
            "{when}: the acknowledged revocation of {grant_id} is lost: {g:?}"
        );
    }
    let violations = shared.violations.lock().expect("log").clone();
    assert!(violations.is_empty(), "{when}: {violations:#?}");
    println!(
        "{when}: chain intact ({} events, {} keyed); {} batches in the log ({} acknowledged); {} files complete; \
         {} requests, {} grants ({} revoked)",
        verdict.verified,
        verdict.keyed,
        in_log,
        acked.len(),
        shared.upload.lock().expect("log").completed.len(),
        requests.len(),
        grants.len(),
        grants
            .values()
            .filter(|g| g.state == pb::GrantState::Revoked as i32)
            .count()
    );
}

/// Downloads a file as its owner: its size and SHA-256 as received.
async fn download(client: &mut Exchange, dataset: &str, name: &str) -> (u64, String) {
    let mut stream = ok(client
        .download_file(pb::DownloadFileRequest {
            dataset: dataset.into(),
            file_name: name.into(),
            ..Default::default()
        })
        .await);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(message) = timeout(CALL_GUARD, stream.message())
        .await
        .expect("the download goes on")
        .unwrap_or_else(|s| panic!("downloading {name}: {:?} {}", s.code(), s.message()))
    {
        hasher.update(&message.data);
        size += message.data.len() as u64;
    }
    (size, hex(&hasher.finalize()))
}

/// Waits at most `WAIT_GUARD` until `done()` holds.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT_GUARD;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not so within {WAIT_GUARD:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The workload between two kills: 150 to 900 ms, varied by round and backend.
fn workload(round: usize, salt: u64) -> Duration {
    Duration::from_millis(150 + splitmix(salt ^ round as u64) % 751)
}

async fn run(backend: &str, database_url: Option<&str>) {
    let began = Instant::now();
    let tmp = tempfile::tempdir().expect("temporary directory");
    let data = tmp.path().join("data");
    let port = free_port();
    let log = log_file(tmp.path(), "hub.log");
    let mut hub = dev_hub_on(&data, port, database_url, &log).await;
    let pki_dir = data.join("pki");
    let table = open_dataset(port, &pki_dir, "企业登记信息").await;
    let files = open_dataset_with(
        port,
        &pki_dir,
        entry_shared_as("企业年报文件", pb::ShareType::Unconditional, pb::ExchangeKind::File),
    )
    .await;
    let conditional = open_dataset_with(
        port,
        &pki_dir,
        entry_shared_as(
            "企业登记信息（有条件）",
            pb::ShareType::Conditional,
            pb::ExchangeKind::Table,
        ),
    )
    .await;
    let shared = Arc::new(Shared {
        port,
        pki: pki_dir.clone(),
        table,
        files,
        conditional,
        paused: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        in_flight: Default::default(),
        lost: Default::default(),
        answered: Mutex::default(),
        internal_errors: Mutex::default(),
        violations: Mutex::default(),
        publish: Mutex::default(),
        upload: Mutex::default(),
        access: Mutex::default(),
    });
    let workers = vec![
        tokio::spawn(publisher(shared.clone())),
        tokio::spawn(uploader(shared.clone())),
        tokio::spawn(approver(shared.clone())),
        tokio::spawn(revoker(shared.clone())),
        tokio::spawn(reader(shared.clone())),
    ];

    let salt = splitmix(backend.len() as u64);
    let mut trail = Trail::default();
    let mut kills = Vec::new();
    for round in 0..ROUNDS {
        let target = TARGETS[round % TARGETS.len()];
        tokio::time::sleep(workload(round, salt)).await;
        let in_flight = || shared.in_flight[target as usize].load(SeqCst) > 0;
        wait_until(&format!("round {round}: a {target:?} call in flight"), in_flight).await;
        // A varied moment inside the call, while it is still in flight.
        tokio::time::sleep(Duration::from_micros(splitmix(salt ^ 0xA5 ^ round as u64) % 4000)).await;
        wait_until(&format!("round {round}: a {target:?} call in flight"), in_flight).await;
        shared.paused.store(true, SeqCst);
        let flying: Vec<usize> = shared.in_flight.iter().map(|n| n.load(SeqCst)).collect();
        hub.kill();
        kills.push(format!("{target:?} {flying:?}"));
        wait_until(&format!("round {round}: the calls cut by the kill end"), || {
            shared.busy() == 0
        })
        .await;
        hub.restart().await;
        check_state(
            &shared,
            &mut trail,
            &format!("{backend} after kill {} ({target:?})", round + 1),
        )
        .await;
        shared.paused.store(false, SeqCst);
    }

    // The workers retry what the last kill cut and finish their current item.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.stop.store(true, SeqCst);
    for worker in workers {
        timeout(WAIT_GUARD, worker)
            .await
            .expect("a worker finishes")
            .expect("a worker");
    }
    check_state(&shared, &mut trail, &format!("{backend} at the end")).await;

    let internal = shared.internal_errors.lock().expect("log").clone();
    assert!(internal.is_empty(), "the hub answered INTERNAL: {internal:#?}");
    let text = hub.log_text();
    assert!(!text.contains("panicked"), "the hub panicked:\n{text}");
    assert_eq!(hub.starts as usize, ROUNDS + 1);
    let lost: Vec<(Path, u64)> = [
        Path::Publish,
        Path::Upload,
        Path::Approve,
        Path::Revoke,
        Path::AuditAppend,
        Path::Other,
    ]
    .into_iter()
    .map(|p| (p, shared.lost[p as usize].load(SeqCst)))
    .collect();
    for (path, n) in &lost[..TARGETS.len()] {
        assert!(*n > 0, "no {path:?} call was ever cut by a kill");
    }
    let upload = shared.upload.lock().expect("log");
    let access = shared.access.lock().expect("log");
    let publish = shared.publish.lock().expect("log");
    println!(
        "{backend}: {ROUNDS} kills in {:.1} s (target and calls in flight per path at each kill: {}); calls cut: {lost:?}; \
         {} batches acknowledged ({} replayed answers); {} files uploaded, resumed {:?}; {} approvals and {} \
         revocations acknowledged, {} committed without an answer; {} audited calls checked",
        began.elapsed().as_secs_f64(),
        kills.join(", "),
        publish.acked.len(),
        publish.replayed,
        upload.completed.len(),
        upload.resumed,
        access.approved.len(),
        access.revoked.len(),
        access.committed_unanswered,
        shared.answered.lock().expect("log").len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_every_write_path_on_sqlite() {
    timeout(TEST_GUARD, run("sqlite", None))
        .await
        .expect("the SQLite kill test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_every_write_path_on_postgres() {
    let Some(schema) = TestSchema::create("xq_faults_kill").await else {
        println!("skipping kill_9_during_every_write_path_on_postgres: {PG_URL_VAR} is not set");
        return;
    };
    timeout(TEST_GUARD, run("postgres", Some(&schema.node_url())))
        .await
        .expect("the PostgreSQL kill test finishes in time");
}
