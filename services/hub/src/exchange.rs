//! ExchangeService: datasets, publishing, pulling, live tails, consumer cursors and files.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use xinqiao_domain::access::{self as access_rules, ReadBasis, RecordView};
use xinqiao_domain::catalogue::{CatalogEntry, ShareType};
use xinqiao_domain::compatibility;
use xinqiao_domain::exchange::{self as rules, ChangeOp, Dataset, DatasetKind, Standing};
use xinqiao_domain::identity::Caller;
use xinqiao_domain::schema::{SchemaRef, uncovered_items, validate_subject};
use xinqiao_domain::{Error, Result, paging, text};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::exchange_service_server::ExchangeService;
use xinqiao_schema::FormatMode;
use xinqiao_store::{
    BatchAudit, ConsumerCursor, DatasetFilter, GrantFilter, NewBatch, NewChange, Store, StoredChange, Upload,
};

use crate::access::Revocations;
use crate::audit::{AuditLog, CallNote, code_name};
use crate::auth::{Authenticator, Relayed};
use crate::config::Limits;
use crate::convert::{self, timestamp};
use crate::federation::fanout;
use crate::federation::relay::{self, Relay, Route};
use crate::feed::ChangeFeed;
use crate::metrics::Metrics;
use crate::paging::{decode, next_token};
use crate::registry::Registry;
use crate::status::{answer, to_status};

const DATASETS: &str = "datasets";
const DEFAULT_FETCH: u32 = 1000;
const MAX_FETCH: u32 = 10_000;
const DEFAULT_SUBSCRIBE_BATCH: u32 = 500;
/// A subscription reads this many of its batches from the store at a time (at most MAX_FETCH
/// changes): one query per message was most of a drain's cost on PostgreSQL.
const READ_AHEAD: u32 = 4;
const SNAPSHOT_PAGE: u32 = 500;
/// Bytes per message when a file is downloaded.
const DOWNLOAD_CHUNK: u32 = 256 * 1024;
/// Messages a live stream may have queued for a slow consumer before the hub stops reading.
const STREAM_BUFFER: usize = 4;
/// Changes in one message stay under this many bytes, well inside the 4 MiB message limit
/// whatever the records' sizes (a single record is at most `max_record_bytes`).
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// A subscription with nothing new re-checks this often even without a notification.
const IDLE_RECHECK: Duration = Duration::from_secs(2);
/// A live read re-decides its rights this often (and at once when this hub revokes a grant), so
/// that a revocation on another hub node, an expiry, a withdrawal or a deactivation ends it.
const RIGHTS_RECHECK: Duration = Duration::from_secs(2);

pub struct ExchangeApi {
    store: Arc<dyn Store>,
    auth: Authenticator,
    registry: Registry,
    feed: Arc<ChangeFeed>,
    limits: Limits,
    stopping: watch::Receiver<bool>,
    audit: AuditLog,
    revocations: Revocations,
    metrics: Metrics,
    /// The benchmark's validation baseline: records are parsed and keyed but not validated.
    skip_validation: bool,
    /// Reads of datasets held on other hubs, relayed (跨级交换); `None` without federation.
    relay: Option<Relay>,
}

/// A read of a dataset's records as the caller asks for it.
pub(crate) struct ReadRequest<'a> {
    pub dataset: &'a str,
    pub grant_id: &'a str,
    pub purpose: &'a str,
    /// Whether records leave the hub (a declared purpose is required then). Consumer cursors and
    /// error reports need the right to read but move no records.
    pub moves_records: bool,
}

impl<'a> ReadRequest<'a> {
    /// A read that moves records out of the hub: its purpose and grant as the caller gave them.
    pub fn records(dataset: &'a str, grant_id: &'a str, purpose: &'a str) -> Self {
        Self {
            dataset,
            grant_id,
            purpose,
            moves_records: true,
        }
    }

    /// A call that needs the right to read but moves no record (cursors, error reports).
    pub fn right_only(dataset: &'a str) -> Self {
        Self {
            dataset,
            grant_id: "",
            purpose: "",
            moves_records: false,
        }
    }
}

/// Decides whether the caller may read a dataset's records and on what basis (ownership, 无条件共享
/// with a purpose, or a grant): the one gate of every read path. The call's audit note names the
/// dataset and its provider once the caller may know of it, so that a refusal names them too.
pub(crate) async fn authorise_read(
    store: &dyn Store,
    caller: &Caller,
    read: &ReadRequest<'_>,
    note: Option<&CallNote>,
) -> Result<(CatalogEntry, Dataset, ReadBasis)> {
    let (entry, basis) = authorise_use(store, caller, read, "dataset", note).await?;
    let dataset = store
        .get_dataset(&entry.resource_code)
        .await?
        .ok_or_else(|| Error::NotFound(format!("dataset {}", entry.resource_code)))?;
    Ok((entry, dataset, basis))
}

/// The entry part of the gate, shared by every resource an entry shares (a dataset's records, an
/// interface's answers): the entry as the caller may see it, and the basis of the read. `kind`
/// names the resource in a NOT_FOUND.
pub(crate) async fn authorise_use(
    store: &dyn Store,
    caller: &Caller,
    read: &ReadRequest<'_>,
    kind: &str,
    note: Option<&CallNote>,
) -> Result<(CatalogEntry, ReadBasis)> {
    let entry = crate::directory::visible_entry(store, caller, read.dataset).await;
    decide_use(store, caller, read, kind, entry, note).await
}

/// The rest of the gate, once the entry is read (`entry`: as the caller may see it).
pub(crate) async fn decide_use(
    store: &dyn Store,
    caller: &Caller,
    read: &ReadRequest<'_>,
    kind: &str,
    entry: Result<CatalogEntry>,
    note: Option<&CallNote>,
) -> Result<(CatalogEntry, ReadBasis)> {
    let entry = entry.map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound(format!("{kind} {}", text::shorten(read.dataset, 64))),
        other => other,
    })?;
    if let Some(note) = note {
        note.about(&entry.resource_code, &entry.provider_code);
    }
    let grants = match caller.department() {
        Some(me) if me != entry.provider_code && entry.content.share.share_type == ShareType::Conditional => {
            store.grants_of(&entry.resource_code, me).await?
        }
        _ => Vec::new(),
    };
    let purpose = read.moves_records.then_some(read.purpose);
    let basis = access_rules::read(caller, &entry, &grants, read.grant_id, purpose, crate::clock::now())?;
    Ok((entry, basis))
}

/// What the trail keeps of a read's basis.
pub(crate) fn note_basis(note: &CallNote, basis: &ReadBasis) {
    match basis {
        ReadBasis::Owner => note.detail("basis", "owner"),
        ReadBasis::Open { purpose } => {
            note.detail("basis", "unconditional");
            note.detail("purpose", purpose.clone());
        }
        ReadBasis::Granted(grant) => {
            note.detail("basis", "grant");
            note.detail("grant", grant.id.clone());
            note.detail("purpose", grant.purpose.clone());
        }
    }
}

/// A change as the reader may receive it: projected and masked under a grant.
fn shaped(view: Option<&RecordView>, mut change: StoredChange) -> StoredChange {
    if let Some(view) = view {
        change.key = view.key(&change.key);
        change.record = change.record.map(|r| view.record(&r).into_bytes());
    }
    change
}

/// A batch that has been authorised and validated.
enum Prepared {
    /// Refused whole (the default batch policy): answered without touching the store.
    Refused {
        dataset: String,
        provider: String,
        answer: pb::PublishResponse,
    },
    /// To commit.
    Batch {
        dataset: String,
        provider: String,
        idempotency_key: String,
        changes: Vec<NewChange>,
        rejected: String,
    },
}

/// A rejected record as kept with its batch, so that a replay answers exactly as the first time.
#[derive(Serialize, Deserialize)]
struct Rejection {
    index: u32,
    errors: Vec<(String, String, String)>,
}

fn rejection_api(r: Rejection) -> pb::RejectedRecord {
    pb::RejectedRecord {
        index: r.index,
        errors: r
            .errors
            .into_iter()
            .map(|(instance_pointer, keyword, message)| pb::RecordViolation {
                instance_pointer,
                keyword,
                message,
            })
            .collect(),
    }
}

fn change_api(c: StoredChange) -> pb::Change {
    pb::Change {
        sequence: c.sequence,
        op: match c.op {
            ChangeOp::Upsert => pb::ChangeOp::Upsert,
            ChangeOp::Delete => pb::ChangeOp::Delete,
        } as i32,
        key: c.key.into_bytes(),
        record: c.record.unwrap_or_default(),
        published_at: Some(timestamp(c.published_at)),
    }
}

/// About what a change takes in a message.
fn message_bytes(c: &StoredChange) -> usize {
    c.key.len() + c.record.as_ref().map_or(0, Vec::len) + 32
}

/// Keeps the leading changes that fit in one message (always at least one). Returns whether the
/// page was cut.
fn fit_message(changes: &mut Vec<StoredChange>) -> bool {
    let mut bytes = 0;
    let fits = changes
        .iter()
        .position(|c| {
            bytes += message_bytes(c);
            bytes > MAX_PAGE_BYTES
        })
        .map_or(changes.len(), |cut| cut.max(1));
    let cut = fits < changes.len();
    changes.truncate(fits);
    cut
}

/// A subscription's reads of the store, ahead of what it has sent: a page of READ_AHEAD batches
/// at a time (a follower far behind costs one query per several messages), and, when a page came
/// back full, the next page read while this one goes out, so that the database's work on it
/// overlaps the hub's on this one. The log only grows after a position, so a page read early is
/// the page a later read would give; nothing read is sent before the rights are re-checked.
struct ReadAhead {
    store: Arc<dyn Store>,
    dataset: String,
    size: u32,
    /// Read, not yet sent, in order.
    pending: VecDeque<StoredChange>,
    /// The dataset's last sequence as of the latest page.
    last_sequence: u64,
    /// The read of the page after `pending`.
    next: Option<tokio::task::JoinHandle<Result<(Vec<StoredChange>, u64)>>>,
}

impl ReadAhead {
    fn new(store: Arc<dyn Store>, dataset: &str, size: u32) -> Self {
        ReadAhead {
            store,
            dataset: dataset.to_owned(),
            size,
            pending: VecDeque::new(),
            last_sequence: 0,
            next: None,
        }
    }

    /// The next message's changes after `after` (the last one sent); none when caught up.
    async fn message(&mut self, after: u64, max: usize) -> Result<Vec<StoredChange>> {
        if self.pending.is_empty() {
            let (changes, last_sequence) = match self.next.take() {
                Some(read) => read
                    .await
                    .map_err(|e| Error::Internal(format!("reading ahead of a subscription: {e}")))??,
                None => self.store.fetch_changes(&self.dataset, after, self.size).await?,
            };
            (self.pending, self.last_sequence) = (changes.into(), last_sequence);
            if self.pending.len() >= self.size as usize
                && let Some(last) = self.pending.back()
            {
                let (store, dataset, from, size) = (self.store.clone(), self.dataset.clone(), last.sequence, self.size);
                self.next = Some(tokio::spawn(
                    async move { store.fetch_changes(&dataset, from, size).await },
                ));
            }
        }
        Ok(next_message(&mut self.pending, max))
    }
}

impl Drop for ReadAhead {
    /// A stream that ends stops its read ahead.
    fn drop(&mut self) {
        if let Some(read) = &self.next {
            read.abort();
        }
    }
}

/// Takes the next message's changes from those read ahead: at most `max` of them, as many as fit
/// in one message (at least one, if any).
fn next_message(pending: &mut VecDeque<StoredChange>, max: usize) -> Vec<StoredChange> {
    let mut bytes = 0;
    let mut take = 0;
    for c in pending.iter().take(max) {
        bytes += message_bytes(c);
        if bytes > MAX_PAGE_BYTES && take > 0 {
            break;
        }
        take += 1;
    }
    pending.drain(..take).collect()
}

fn dataset_api(d: Dataset, name: String, provider_name: String, standing: Standing) -> pb::Dataset {
    let (subject, version) = d.schema.map(|s| (s.subject, s.version)).unwrap_or_default();
    pb::Dataset {
        dataset: d.id,
        name,
        provider_code: d.provider_code,
        provider_name,
        kind: convert::dataset_kind_api(d.kind),
        schema_subject: subject,
        schema_version: version,
        key: d.key,
        record_count: d.record_count,
        last_sequence: d.last_sequence,
        last_published_at: d.last_published_at.map(timestamp),
        standing: convert::standing_api(standing),
        created_at: Some(timestamp(d.created_at)),
    }
}

impl ExchangeApi {
    // Each argument is one of the hub's shared parts, built once by `server::start`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        auth: Authenticator,
        registry: Registry,
        feed: Arc<ChangeFeed>,
        limits: Limits,
        stopping: watch::Receiver<bool>,
        audit: AuditLog,
        revocations: Revocations,
        metrics: Metrics,
    ) -> Self {
        Self {
            auth,
            store,
            registry,
            feed,
            limits,
            stopping,
            audit,
            revocations,
            metrics,
            skip_validation: false,
            relay: None,
        }
    }

    /// Relays reads of datasets aggregated from child hubs (see `federation::relay`).
    pub fn relay(mut self, relay: Option<Relay>) -> Self {
        self.relay = relay;
        self
    }

    /// Where a read of `dataset` is relayed, if it is held on another hub; noted for the trail.
    async fn route(&self, dataset: &str, note: &CallNote) -> Result<Option<(Relay, Route)>> {
        let Some(relay) = &self.relay else { return Ok(None) };
        let Some(route) = relay.route(dataset).await? else {
            return Ok(None);
        };
        note.about(&route.entry.resource_code, &route.entry.provider_code);
        note.detail("relayed_to", route.peer.division_code.clone());
        note.detail("origin_hub", route.origin_hub.clone());
        Ok(Some((relay.clone(), route)))
    }

    /// A relayed stream passed on to the caller, recorded in this hub's trail as a local one is;
    /// the peer's failures told with its name. `endless`: the stream never ends of itself (a
    /// subscription), so its end without a status means the peer went away. The reader's
    /// standing here is re-checked as for a local stream, so that a deactivated department (or a
    /// relaying peer removed) is cut off here too.
    fn relay_stream<T: Send + 'static>(
        &self,
        (note, reader): (CallNote, (Caller, Option<Relayed>)),
        peer: String,
        mut upstream: impl tokio_stream::Stream<Item = std::result::Result<T, Status>> + Unpin + Send + 'static,
        records: fn(&T) -> usize,
        endless: bool,
    ) -> ReceiverStream<std::result::Result<T, Status>> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let api = self.clone_for_task();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            let mut delivered = 0usize;
            let mut recheck = tokio::time::interval(RIGHTS_RECHECK);
            recheck.tick().await;
            let outcome = loop {
                let message = tokio::select! {
                    message = upstream.next() => message.transpose(),
                    _ = recheck.tick() => {
                        let standing = match &reader.1 {
                            Some(relayed) => api.auth.still_peer(relayed).await,
                            None => api.auth.still_active(&reader.0).await,
                        };
                        match standing {
                            Ok(()) => continue,
                            Err(e) => break Err(to_status(e)),
                        }
                    }
                    _ = tx.closed() => break Ok(()),
                    _ = stopping.changed() => break Ok(()),
                };
                match message {
                    Ok(Some(message)) => {
                        let count = records(&message);
                        if tx.send(Ok(message)).await.is_err() {
                            break Ok(());
                        }
                        delivered += count;
                    }
                    Ok(None) if endless => {
                        break Err(to_status(Error::Unavailable(format!(
                            "peer hub {peer} ended the stream; resume from your last sequence"
                        ))));
                    }
                    Ok(None) => break Ok(()),
                    Err(status) => break Err(to_status(relay::peer_error(&peer, &status))),
                }
            };
            api.close_stream(&note, &tx, outcome, delivered).await;
        });
        ReceiverStream::new(rx)
    }

    /// For the benchmark only (see `config::BenchmarkSwitches`).
    pub fn skip_validation(mut self, skip: bool) -> Self {
        self.skip_validation = skip;
        self
    }

    /// The entry behind a dataset name, if the caller may see it.
    async fn entry(&self, caller: &Caller, id: &str) -> Result<CatalogEntry> {
        crate::directory::visible_entry(self.store.as_ref(), caller, id)
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => dataset_not_found(id),
                other => other,
            })
    }

    async fn dataset(&self, id: &str) -> Result<Dataset> {
        self.store.get_dataset(id).await?.ok_or_else(|| dataset_not_found(id))
    }

    /// The entry and dataset the caller may read records of, and on what basis; noted for the
    /// audit trail.
    async fn readable(
        &self,
        caller: &Caller,
        read: &ReadRequest<'_>,
        note: &CallNote,
    ) -> Result<(CatalogEntry, Dataset, ReadBasis)> {
        let (entry, dataset, basis) = authorise_read(self.store.as_ref(), caller, read, Some(note)).await?;
        note_basis(note, &basis);
        Ok((entry, dataset, basis))
    }

    /// The caller's standing toward a dataset, with its grants.
    async fn standing(&self, caller: &Caller, dataset: &str, provider: &str, share: ShareType) -> Result<Standing> {
        let standing = rules::standing(caller, provider, share);
        if let (Standing::Requestable, Some(me)) = (standing, caller.department()) {
            let now = crate::clock::now();
            if self
                .store
                .grants_of(dataset, me)
                .await?
                .iter()
                .any(|g| g.is_active(now))
            {
                return Ok(Standing::Granted);
            }
        }
        Ok(standing)
    }

    /// Validates and commits one batch, or replays the answer to an earlier commit of it.
    async fn publish(
        &self,
        caller: &Caller,
        request: pb::PublishRequest,
        note: &CallNote,
    ) -> Result<pb::PublishResponse> {
        let prepared = self.prepare(caller, request, note).await?;
        self.commit(prepared, note).await
    }

    async fn record_publish(&self, note: &CallNote, dataset: &str, provider: &str, detail: Value) -> Result<()> {
        let mut event = note.event("OK");
        event.target = dataset.to_string();
        event.about = provider.to_string();
        event.detail = detail.to_string();
        self.audit.record(event).await
    }

    /// Authorises and validates a batch: everything before the commit, which a stream of batches
    /// overlaps with the previous batch's commit.
    async fn prepare(&self, caller: &Caller, request: pb::PublishRequest, note: &CallNote) -> Result<Prepared> {
        let entry = self.entry(caller, &request.dataset).await?;
        note.about(&entry.resource_code, &entry.provider_code);
        rules::publish(caller, &entry)?;
        let dataset = self.dataset(&request.dataset).await?;
        text::check(&request.idempotency_key, true, 200, false).map_err(|e| Error::invalid("idempotency_key", e))?;
        let policy = pb::BatchPolicy::try_from(request.policy)
            .map_err(|_| Error::invalid("policy", format!("{} is not a known batch policy", request.policy)))?;
        if request.changes.len() > self.limits.max_batch_records {
            return Err(Error::ResourceExhausted(format!(
                "{} changes in one batch; at most {}",
                request.changes.len(),
                self.limits.max_batch_records
            )));
        }
        let schema = match (&dataset.kind, &dataset.schema) {
            (DatasetKind::Table, Some(schema)) => schema.clone(),
            _ => {
                return Err(Error::FailedPrecondition(format!(
                    "{} is a file dataset: upload files to it",
                    dataset.id
                )));
            }
        };
        let schema = self.registry.resolve(&schema.subject, schema.version, true).await?;
        let mode = if request.lenient {
            FormatMode::Lenient
        } else {
            FormatMode::Strict
        };
        let validator = self.registry.validator(&schema, mode).await?;

        let mut changes = Vec::with_capacity(request.changes.len());
        let mut rejected = Vec::new();
        for (index, change) in request.changes.into_iter().enumerate() {
            let reject = |keyword: &str, message: String| Rejection {
                index: index as u32,
                errors: vec![(String::new(), keyword.to_string(), message)],
            };
            let (op, bytes) = match change.change {
                Some(pb::record_change::Change::Upsert(bytes)) => (ChangeOp::Upsert, bytes),
                Some(pb::record_change::Change::Delete(bytes)) => (ChangeOp::Delete, bytes),
                None => {
                    rejected.push(reject("change", "neither an upsert nor a delete".into()));
                    continue;
                }
            };
            if bytes.len() > self.limits.max_record_bytes {
                return Err(Error::ResourceExhausted(format!(
                    "change {index} is {} bytes; at most {} per record",
                    bytes.len(),
                    self.limits.max_record_bytes
                )));
            }
            // Each record is checked as UTF-8 once and parsed once; the stored text is the
            // publisher's own bytes.
            let text = match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => {
                    rejected.push(reject("parse", "not UTF-8 text".into()));
                    continue;
                }
            };
            let value: Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    rejected.push(reject("parse", format!("not a JSON document: {e}")));
                    continue;
                }
            };
            if op == ChangeOp::Upsert && !self.skip_validation {
                let outcome = validator.validate(&value);
                if !outcome.errors.is_empty() {
                    rejected.push(Rejection {
                        index: index as u32,
                        errors: outcome
                            .errors
                            .into_iter()
                            .map(|v| (v.instance_pointer, v.keyword, v.message))
                            .collect(),
                    });
                    continue;
                }
            }
            let key = match rules::record_key(&value, &dataset.key) {
                Ok(key) => key,
                Err(message) => {
                    rejected.push(reject("key", message));
                    continue;
                }
            };
            let record = match op {
                ChangeOp::Upsert => Some(text),
                ChangeOp::Delete => None,
            };
            changes.push(NewChange { op, key, record });
        }

        if !rejected.is_empty() {
            self.metrics.validation_failures(&dataset.id, rejected.len() as u64);
        }
        let reject_all = policy == pb::BatchPolicy::RejectAll;
        if reject_all && !rejected.is_empty() {
            // Nothing is stored: a retry re-validates to the same answer.
            return Ok(Prepared::Refused {
                dataset: dataset.id,
                provider: entry.provider_code,
                answer: pb::PublishResponse {
                    idempotency_key: request.idempotency_key,
                    accepted: 0,
                    rejected: rejected.into_iter().map(rejection_api).collect(),
                    ..Default::default()
                },
            });
        }
        let rejected = serde_json::to_string(&rejected).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Prepared::Batch {
            dataset: dataset.id,
            provider: entry.provider_code,
            idempotency_key: request.idempotency_key,
            changes,
            rejected,
        })
    }

    /// Commits a prepared batch (or replays the answer to an earlier commit of it), and records
    /// the publish in the audit trail: one event per batch, with its counts.
    async fn commit(&self, prepared: Prepared, note: &CallNote) -> Result<pb::PublishResponse> {
        let (dataset, provider, idempotency_key, changes, rejected) = match prepared {
            Prepared::Refused {
                dataset,
                provider,
                answer,
            } => {
                let detail = serde_json::json!({
                    "idempotency_key": answer.idempotency_key, "accepted": 0, "rejected": answer.rejected.len(),
                });
                self.record_publish(note, &dataset, &provider, detail).await?;
                return Ok(answer);
            }
            Prepared::Batch {
                dataset,
                provider,
                idempotency_key,
                changes,
                rejected,
            } => (dataset, provider, idempotency_key, changes, rejected),
        };
        let rejections: Vec<Rejection> = serde_json::from_str(&rejected).unwrap_or_default();
        // Stored in the batch's own transaction; the store adds the sequences it gave.
        let mut event = note.event("OK");
        event.target.clone_from(&dataset);
        event.about.clone_from(&provider);
        event.detail = serde_json::json!({
            "idempotency_key": idempotency_key, "rejected": rejections.len(),
        })
        .to_string();
        let batch = NewBatch {
            dataset: &dataset,
            idempotency_key: &idempotency_key,
            changes: &changes,
            rejected: &rejected,
            at: crate::clock::now(),
            audit: Some(BatchAudit {
                event: &event,
                linker: self.audit.linker().clone(),
            }),
        };
        let result = self.store.publish_batch(&batch).await?;
        if !result.replayed {
            self.metrics.records_published(&dataset, u64::from(result.accepted));
        }
        if result.last_sequence > 0 {
            self.feed.notify(&dataset, result.last_sequence);
        }
        let rejected: Vec<Rejection> = serde_json::from_str(&result.rejected).unwrap_or_default();
        if result.replayed {
            // A replay writes no batch, so its event is appended on its own.
            let detail = serde_json::json!({
                "idempotency_key": idempotency_key, "accepted": result.accepted, "rejected": rejected.len(),
                "first_sequence": result.first_sequence, "last_sequence": result.last_sequence,
                "replayed": true,
            });
            self.record_publish(note, &dataset, &provider, detail).await?;
        }
        Ok(pb::PublishResponse {
            idempotency_key,
            accepted: result.accepted,
            rejected: rejected.into_iter().map(rejection_api).collect(),
            first_sequence: result.first_sequence,
            last_sequence: result.last_sequence,
            replayed: result.replayed,
        })
    }

    /// Hashes a complete upload as stored, a chunk at a time.
    async fn digest(&self, upload: &Upload) -> Result<String> {
        let mut hasher = Sha256::new();
        let mut offset = 0;
        while offset < upload.size {
            let chunk = self.store.read_upload(&upload.id, offset, 1024 * 1024).await?;
            if chunk.is_empty() {
                return Err(Error::Internal(format!("upload {} ends early at {offset}", upload.id)));
            }
            hasher.update(&chunk);
            offset += chunk.len() as u64;
        }
        Ok(xinqiao_domain::fingerprint::to_hex(&hasher.finalize()))
    }

    fn upload_status(u: &Upload) -> pb::UploadStatus {
        pb::UploadStatus {
            upload_id: u.id.clone(),
            dataset: u.dataset.clone(),
            file_name: u.file_name.clone(),
            size: u.size,
            received: u.received,
            complete: u.sequence.is_some(),
            sequence: u.sequence.unwrap_or(0),
        }
    }

    /// The upload, if the caller may write to its dataset.
    async fn own_upload(&self, caller: &Caller, id: &str) -> Result<Upload> {
        let not_found = || Error::NotFound(format!("upload {}", text::shorten(id, 64)));
        let upload = self.store.get_upload(id).await?.ok_or_else(not_found)?;
        let entry = self.entry(caller, &upload.dataset).await.map_err(|_| not_found())?;
        rules::publish(caller, &entry)?;
        Ok(upload)
    }
}

/// NOT_FOUND for a dataset name, echoing at most its first 64 characters (a status message
/// travels in a response header).
fn dataset_not_found(id: &str) -> Error {
    Error::NotFound(format!("dataset {}", text::shorten(id, 64)))
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

/// A live stream that ends with UNAVAILABLE as soon as the hub starts stopping, dropping what is
/// still queued for the client: the client resumes from the last sequence it received.
pub struct UntilStopping<T> {
    inner: ReceiverStream<Result<T, Status>>,
    stopped: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    done: bool,
}

impl<T> UntilStopping<T> {
    fn new(inner: ReceiverStream<Result<T, Status>>, mut stopping: watch::Receiver<bool>) -> Self {
        let stopped = Box::pin(async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        });
        Self {
            inner,
            stopped,
            done: false,
        }
    }
}

impl<T> tokio_stream::Stream for UntilStopping<T> {
    type Item = Result<T, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        if self.stopped.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(Status::unavailable(
                "the hub is shutting down; resume from your last sequence",
            ))));
        }
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[tonic::async_trait]
impl ExchangeService for ExchangeApi {
    async fn create_dataset(
        &self,
        request: Request<pb::CreateDatasetRequest>,
    ) -> Result<Response<pb::Dataset>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.into_inner();
            let entry = self.entry(&caller, &r.dataset).await?;
            note.about(&entry.resource_code, &entry.provider_code);
            rules::create_dataset(&caller, &entry)?;
            let kind = DatasetKind::of_entry(&entry)?;
            let schema = match kind {
                DatasetKind::File => {
                    if !r.schema_subject.is_empty() || !r.key.is_empty() {
                        return Err(Error::invalid("schema_subject", "a file dataset has no schema or key"));
                    }
                    None
                }
                DatasetKind::Table => {
                    if !r.schema_subject.is_empty() {
                        validate_subject(&r.schema_subject).map_err(|e| Error::invalid("schema_subject", e))?;
                    }
                    let subject = match (
                        r.schema_subject.is_empty(),
                        self.store.entry_schema(&entry.resource_code).await?,
                    ) {
                        (false, _) => SchemaRef {
                            subject: r.schema_subject.clone(),
                            version: r.schema_version,
                        },
                        (true, Some(bound)) => bound.schema,
                        (true, None) => {
                            return Err(Error::invalid(
                                "schema_subject",
                                "name the schema of the records (or bind one to the entry)",
                            ));
                        }
                    };
                    let schema = self.registry.resolve(&subject.subject, subject.version, false).await?;
                    let document: Value =
                        serde_json::from_str(&schema.content).map_err(|e| Error::Internal(e.to_string()))?;
                    let missing = uncovered_items(&entry.content, &document);
                    if !missing.is_empty() {
                        return Err(Error::FailedPrecondition(format!(
                            "schema '{}' version {} does not cover these data items (信息项): {}",
                            schema.subject,
                            schema.version,
                            missing.join(", ")
                        )));
                    }
                    rules::validate_key(&r.key, &document)?;
                    Some(SchemaRef {
                        subject: schema.subject,
                        version: schema.version,
                    })
                }
            };
            let dataset = Dataset {
                id: entry.resource_code.clone(),
                provider_code: entry.provider_code.clone(),
                kind,
                schema,
                key: if kind == DatasetKind::Table { r.key } else { Vec::new() },
                record_count: 0,
                last_sequence: 0,
                last_published_at: None,
                created_at: crate::clock::now(),
            };
            let created = self.store.create_dataset(&dataset).await?;
            Ok(dataset_api(
                created,
                entry.content.name,
                entry.provider_name,
                Standing::Owner,
            ))
        })
        .await
    }

    async fn upgrade_dataset_schema(
        &self,
        request: Request<pb::UpgradeDatasetSchemaRequest>,
    ) -> Result<Response<pb::Dataset>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.into_inner();
            let entry = self.entry(&caller, &r.dataset).await?;
            note.about(&entry.resource_code, &entry.provider_code);
            note.detail("schema_version", r.schema_version);
            rules::publish(&caller, &entry)?;
            let dataset = self.dataset(&r.dataset).await?;
            let Some(current) = dataset.schema.clone() else {
                return Err(Error::FailedPrecondition(format!(
                    "{} is a file dataset: it has no schema",
                    dataset.id
                )));
            };
            if r.schema_version <= current.version {
                return Err(Error::invalid(
                    "schema_version",
                    format!("must be newer than the current version {}", current.version),
                ));
            }
            let old = self.registry.resolve(&current.subject, current.version, true).await?;
            let new = self.registry.resolve(&current.subject, r.schema_version, false).await?;
            let parse = |text: &str| serde_json::from_str::<Value>(text).map_err(|e| Error::Internal(e.to_string()));
            let (old_doc, new_doc) = (parse(&old.content)?, parse(&new.content)?);
            let (mode, _) = self.registry.mode_of(&current.subject).await?;
            let problems = compatibility::check_versions(mode, &[(old.version, &old_doc)], &new_doc);
            if !problems.is_empty() {
                return Err(Error::Incompatible(problems));
            }
            rules::validate_key(&dataset.key, &new_doc)?;
            let updated = self
                .store
                .set_dataset_schema(
                    &dataset.id,
                    &SchemaRef {
                        subject: new.subject,
                        version: new.version,
                    },
                )
                .await?;
            Ok(dataset_api(
                updated,
                entry.content.name,
                entry.provider_name,
                Standing::Owner,
            ))
        })
        .await
    }

    async fn get_dataset(&self, request: Request<pb::GetDatasetRequest>) -> Result<Response<pb::Dataset>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            let request_name = request.get_ref().dataset.clone();
            if let Some((relay, route)) = self.route(&request_name, &note).await? {
                let message = pb::GetDatasetRequest {
                    dataset: route.dataset.clone(),
                };
                let request = relay.request(&caller, relayed.as_ref(), message, true)?;
                let mut client = relay.exchange(&route)?;
                let call = client.get_dataset(request);
                let mut dataset = relay::answered(&route.peer.division_code, call).await?;
                // Named as the caller named it, so that its further calls come the same way.
                dataset.dataset = request_name.clone();
                return Ok(dataset);
            }
            let entry = self.entry(&caller, &request.get_ref().dataset).await?;
            let dataset = self.dataset(&entry.resource_code).await?;
            let standing = self
                .standing(
                    &caller,
                    &dataset.id,
                    &entry.provider_code,
                    entry.content.share.share_type,
                )
                .await?;
            Ok(dataset_api(dataset, entry.content.name, entry.provider_name, standing))
        })
        .await
    }

    async fn list_datasets(
        &self,
        request: Request<pb::ListDatasetsRequest>,
    ) -> Result<Response<pb::ListDatasetsResponse>, Status> {
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.get_ref();
            text::check(&r.keyword, false, 200, false).map_err(|e| Error::invalid("keyword", e))?;
            let limit = paging::page_size(r.page_size)?;
            let after = decode(DATASETS, &r.page_token)?;
            let me = caller.department().map(str::to_string);
            let mut filter = DatasetFilter {
                keyword: r.keyword.trim().to_string(),
                provider_code: r.provider_code.clone(),
                kind: convert::filter_enum("kind", r.kind, convert::dataset_kind)?,
                published_or_provided_by: me.clone(),
                ..DatasetFilter::default()
            };
            let standing = pb::Standing::try_from(r.standing)
                .map_err(|_| Error::invalid("standing", format!("{} is not a known standing", r.standing)))?;
            let others = |share: ShareType, filter: &mut DatasetFilter| {
                filter.share_type = Some(share);
                filter.exclude_provider = me.clone();
            };
            match standing {
                pb::Standing::Unspecified => {}
                pb::Standing::Owner => filter.provider_code = me.clone().unwrap_or_else(|| "-".into()),
                pb::Standing::Open => others(ShareType::Unconditional, &mut filter),
                pb::Standing::Requestable => others(ShareType::Conditional, &mut filter),
                pb::Standing::NotShared => others(ShareType::NotShared, &mut filter),
                pb::Standing::Granted => {
                    others(ShareType::Conditional, &mut filter);
                    filter.granted_to = Some((me.clone().unwrap_or_else(|| "-".into()), crate::clock::now()));
                }
            }
            let mut page = self.store.list_datasets(&filter, after.as_deref(), limit + 1).await?;
            let next_page_token = next_token(DATASETS, &mut page, limit, |l| &l.dataset.id);
            // The datasets the caller holds an active grant on, to tell GRANTED from REQUESTABLE.
            let granted: std::collections::HashSet<String> = match &me {
                Some(me) => {
                    let active = GrantFilter {
                        grantee: Some(me.clone()),
                        active_at: Some(crate::clock::now()),
                        ..GrantFilter::default()
                    };
                    let grants = self.store.list_grants(&active, None, paging::MAX_PAGE_SIZE).await?;
                    grants.into_iter().map(|g| g.dataset).collect()
                }
                None => Default::default(),
            };
            let datasets = page
                .into_iter()
                .map(|l| {
                    let mut standing = rules::standing(&caller, &l.dataset.provider_code, l.share_type);
                    if standing == Standing::Requestable && granted.contains(&l.dataset.id) {
                        standing = Standing::Granted;
                    }
                    dataset_api(l.dataset, l.name, l.provider_name, standing)
                })
                .collect();
            Ok(pb::ListDatasetsResponse {
                datasets,
                next_page_token,
            })
        })
        .await
    }

    async fn publish(&self, request: Request<pb::PublishRequest>) -> Result<Response<pb::PublishResponse>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            self.publish(&caller, request.into_inner(), &note).await
        })
        .await
    }

    type PublishStreamStream = Stream<pb::PublishResponse>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let note = CallNote::of(&request);
        let caller = self.auth.caller(&request).await.map_err(to_status)?;
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        // Two stages: the next batch is validated while the previous one commits. Batches are
        // committed in the order they came; each is acknowledged once committed.
        let (prepared_tx, mut prepared_rx) = mpsc::channel::<Result<Prepared, Status>>(1);
        let api = self.clone_for_task();
        let preparing = note.clone();
        tokio::spawn(async move {
            while let Some(next) = incoming.next().await {
                let prepared = match next {
                    Ok(batch) => api.prepare(&caller, batch, &preparing).await.map_err(to_status),
                    Err(status) => Err(callers_fault(status)),
                };
                let failed = prepared.is_err();
                if prepared_tx.send(prepared).await.is_err() || failed {
                    break;
                }
            }
        });
        let api = self.clone_for_task();
        tokio::spawn(async move {
            while let Some(prepared) = prepared_rx.recv().await {
                let reply = match prepared {
                    Ok(prepared) => api.commit(prepared, &note).await.map_err(to_status),
                    Err(status) => {
                        // A batch refused before its commit (a denial, a bad message): recorded
                        // here, since the stream had already started when the layer saw it.
                        let _ = api.audit.record(note.event(code_name(status.code()))).await;
                        Err(status)
                    }
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        let note = CallNote::of(&request);
        let (answer, view) = answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            let r = request.get_ref();
            if let Some((relay, route)) = self.route(&r.dataset, &note).await? {
                let message = pb::FetchRequest {
                    dataset: route.dataset.clone(),
                    // A grant made there, named here as `<origin hub>:<id>`, as the peer knows it.
                    grant_id: route.name(&r.grant_id),
                    ..r.clone()
                };
                let request = relay.request(&caller, relayed.as_ref(), message, true)?;
                let mut client = relay.exchange(&route)?;
                let call = client.fetch(request);
                let answer = relay::answered_response(&route.peer.division_code, call).await?;
                // The view passed on, for the fan-out's checks of a hub further up.
                let view = fanout::headers_of(answer.metadata()).0;
                let answer = answer.into_inner();
                note.detail("records", answer.changes.len());
                note.detail("after_sequence", r.after_sequence);
                return Ok((answer, view));
            }
            let limit = match r.limit {
                0 => DEFAULT_FETCH,
                n if n > MAX_FETCH => return Err(Error::invalid("limit", format!("is {n}; at most {MAX_FETCH}"))),
                n => n,
            };
            let read = ReadRequest::records(&r.dataset, &r.grant_id, &r.purpose);
            let (_, dataset, basis) = self.readable(&caller, &read, &note).await?;
            let (mut changes, last_sequence) = self.store.fetch_changes(&dataset.id, r.after_sequence, limit).await?;
            fit_message(&mut changes);
            self.metrics.records_delivered(&dataset.id, changes.len() as u64);
            note.detail("records", changes.len());
            note.detail("after_sequence", r.after_sequence);
            let view = basis.view(&dataset.key);
            // A peer hub is told the view it got, for its fan-out (see `federation::fanout`).
            let digest = relayed
                .is_some()
                .then(|| fanout::view_digest(&dataset.id, view.as_ref()));
            let answer = pb::FetchResponse {
                changes: changes
                    .into_iter()
                    .map(|c| change_api(shaped(view.as_ref(), c)))
                    .collect(),
                last_sequence,
            };
            Ok((answer, digest))
        })
        .await?
        .into_inner();
        let mut response = Response::new(answer);
        if let Some(view) = view {
            fanout::set_headers(response.metadata_mut(), &view, None);
        }
        Ok(response)
    }

    type SnapshotStream = Stream<pb::SnapshotChunk>;

    async fn snapshot(&self, request: Request<pb::SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        let note = CallNote::of(&request);
        let (caller, relayed) = self.auth.reader(&request).await.map_err(to_status)?;
        let r = request.into_inner();
        if let Some((relay, route)) = self.route(&r.dataset, &note).await.map_err(to_status)? {
            let peer = route.peer.division_code.clone();
            let message = pb::SnapshotRequest {
                dataset: route.dataset.clone(),
                // A grant made there, named here as `<origin hub>:<id>`, as the peer knows it.
                grant_id: route.name(&r.grant_id),
                ..r
            };
            let request = relay
                .request(&caller, relayed.as_ref(), message, false)
                .map_err(to_status)?;
            let mut client = relay.exchange(&route).map_err(to_status)?;
            let call = client.snapshot(request);
            let upstream = relay::answered(&peer, call).await.map_err(to_status)?;
            self.open_stream(&note, None).await?;
            let stream = self.relay_stream(
                (note, (caller, relayed)),
                peer,
                upstream,
                |c: &pb::SnapshotChunk| c.records.len(),
                false,
            );
            return Ok(Response::new(stream));
        }
        let read = ReadRequest::records(&r.dataset, &r.grant_id, &r.purpose);
        let (_, dataset, basis) = self.readable(&caller, &read, &note).await.map_err(to_status)?;
        let as_of = match r.as_of_sequence {
            0 => dataset.last_sequence,
            n if n > dataset.last_sequence => {
                return Err(to_status(Error::invalid(
                    "as_of_sequence",
                    format!("is {n}, beyond the dataset's last sequence {}", dataset.last_sequence),
                )));
            }
            n => n,
        };
        note.detail("as_of_sequence", as_of);
        self.open_stream(&note, None).await?;
        let mut rights = self.rights((caller, relayed), &r.dataset, &r.grant_id, &r.purpose);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let api = self.clone_for_task();
        tokio::spawn(async move {
            let mut view = basis.view(&dataset.key);
            let mut after_key: Option<String> = None;
            let mut delivered = 0usize;
            let outcome = loop {
                if let Err(e) = rights.recheck(&mut view, &dataset.key).await {
                    break Err(to_status(e));
                }
                let page = api
                    .store
                    .snapshot_page(&dataset.id, as_of, after_key.as_deref(), SNAPSHOT_PAGE)
                    .await;
                let mut page = match page {
                    Ok(page) => page,
                    Err(e) => break Err(to_status(e)),
                };
                let full = page.len() == SNAPSHOT_PAGE as usize;
                let cut = fit_message(&mut page);
                let done = !full && !cut;
                after_key = page.last().map(|c| c.key.clone());
                let count = page.len();
                let chunk = pb::SnapshotChunk {
                    as_of_sequence: as_of,
                    records: page.into_iter().map(|c| change_api(shaped(view.as_ref(), c))).collect(),
                };
                // Sending waits while the consumer is behind: the hub never buffers more.
                if tx.send(Ok(chunk)).await.is_err() {
                    break Ok(());
                }
                delivered += count;
                api.metrics.records_delivered(&dataset.id, count as u64);
                if done {
                    break Ok(());
                }
            };
            api.close_stream(&note, &tx, outcome, delivered).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type SubscribeStream = UntilStopping<pb::ChangeBatch>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let note = CallNote::of(&request);
        let (caller, relayed) = self.auth.reader(&request).await.map_err(to_status)?;
        let r = request.into_inner();
        if let Some((relay, route)) = self.route(&r.dataset, &note).await.map_err(to_status)? {
            // The consumer's cursor is kept where the dataset is, under the department's name.
            let peer = route.peer.division_code.clone();
            let consumer = (!r.consumer.is_empty()).then(|| r.consumer.clone());
            note.detail("after_sequence", r.after_sequence);
            let message = pb::SubscribeRequest {
                dataset: route.dataset.clone(),
                // A grant made there, named here as `<origin hub>:<id>`, as the peer knows it.
                grant_id: route.name(&r.grant_id),
                ..r
            };
            // Followers of the same view share one upstream (see `federation::fanout`); each
            // opens its own first, so that the peer decides and audits its read.
            let reader = fanout::Reader {
                relay: relay.clone(),
                route,
                caller: caller.clone(),
                relayed: relayed.clone(),
                request: message,
            };
            let opened = reader
                .open(None)
                .await
                .map_err(|status| to_status(relay::peer_error(&peer, &status)))?;
            let (view, after) = (opened.view.clone(), opened.after);
            self.open_stream(&note, consumer.as_deref()).await?;
            let stream = self.relay_stream(
                (note, (caller, relayed)),
                peer,
                fanout::follow(relay.fanout(), reader, opened),
                |b: &pb::ChangeBatch| b.changes.len(),
                true,
            );
            let mut response = Response::new(UntilStopping::new(stream, self.stopping.clone()));
            // Passed on, so that a hub relaying further up can share this stream too.
            if let Some(view) = view {
                fanout::set_headers(response.metadata_mut(), &view, after);
            }
            return Ok(response);
        }
        let read = ReadRequest::records(&r.dataset, &r.grant_id, &r.purpose);
        let (_, dataset, basis) = self.readable(&caller, &read, &note).await.map_err(to_status)?;
        let max_batch = match r.max_batch {
            0 => DEFAULT_SUBSCRIBE_BATCH,
            n => n.min(MAX_FETCH),
        };
        let mut after = r.after_sequence;
        if !r.consumer.is_empty() {
            rules::validate_consumer(&r.consumer).map_err(to_status)?;
            let department = caller.department().unwrap_or_default();
            if let Some(cursor) = self
                .store
                .get_consumer(&dataset.id, department, &r.consumer)
                .await
                .map_err(to_status)?
            {
                after = cursor.acknowledged;
            }
            note.detail("consumer", r.consumer.clone());
        }
        note.detail("after_sequence", after);
        self.open_stream(&note, Some(r.consumer.as_str()).filter(|c| !c.is_empty()))
            .await?;
        // A peer hub is told the view it gets and where the stream starts, before any record,
        // so that its followers of the same view can share this stream (`federation::fanout`).
        let start = after;
        let shared_as = relayed
            .is_some()
            .then(|| fanout::view_digest(&dataset.id, basis.view(&dataset.key).as_ref()));
        let mut rights = self.rights((caller, relayed), &r.dataset, &r.grant_id, &r.purpose);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let api = self.clone_for_task();
        let mut head = self.feed.watch(&dataset.id, dataset.last_sequence);
        let mut stopping = self.stopping.clone();
        // Dropped with the task, however the stream ends: no stale lag stays behind.
        let lag = self.metrics.subscription(&dataset.id);
        tokio::spawn(async move {
            let mut view = basis.view(&dataset.key);
            let mut delivered = 0usize;
            let read_size = max_batch.saturating_mul(READ_AHEAD).min(MAX_FETCH).max(max_batch);
            let mut reads = ReadAhead::new(api.store.clone(), &dataset.id, read_size);
            let outcome = loop {
                // Before every message, so that a revocation stops what was read ahead too.
                if let Err(e) = rights.recheck(&mut view, &dataset.key).await {
                    break Err(to_status(e));
                }
                let changes = match reads.message(after, max_batch as usize).await {
                    Ok(changes) => changes,
                    Err(e) => break Err(to_status(e)),
                };
                let last_sequence = reads.last_sequence;
                lag.set(last_sequence.saturating_sub(changes.last().map_or(after, |c| c.sequence)));
                if let Some(last) = changes.last() {
                    after = last.sequence;
                    let count = changes.len();
                    let batch = pb::ChangeBatch {
                        changes: changes
                            .into_iter()
                            .map(|c| change_api(shaped(view.as_ref(), c)))
                            .collect(),
                        last_sequence,
                    };
                    // Waits while the consumer is behind: a slow consumer holds at most
                    // STREAM_BUFFER messages in the hub.
                    tokio::select! {
                        sent = tx.send(Ok(batch)) => if sent.is_err() { break Ok(()) },
                        _ = stopping.changed() => break Ok(()),
                    }
                    delivered += count;
                    api.metrics.records_delivered(&dataset.id, count as u64);
                    continue;
                }
                tokio::select! {
                    _ = head.changed() => {}
                    _ = tokio::time::sleep(IDLE_RECHECK) => {}
                    _ = rights.revoked.changed() => rights.force = true,
                    _ = tx.closed() => break Ok(()),
                    _ = stopping.changed() => break Ok(()),
                }
            };
            note.detail("last_sequence", after);
            api.close_stream(&note, &tx, outcome, delivered).await;
        });
        let mut response = Response::new(UntilStopping::new(ReceiverStream::new(rx), self.stopping.clone()));
        if let Some(view) = shared_as {
            fanout::set_headers(response.metadata_mut(), &view, Some(start));
        }
        Ok(response)
    }

    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::ConsumerCursor>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            let r = request.get_ref();
            rules::validate_consumer(&r.consumer)?;
            let department = caller
                .department()
                .ok_or_else(|| Error::PermissionDenied("consumers belong to departments".into()))?;
            if let Some((relay, route)) = self.route(&r.dataset, &note).await? {
                let message = pb::AcknowledgeRequest {
                    dataset: route.dataset.clone(),
                    ..r.clone()
                };
                let request = relay.request(&caller, relayed.as_ref(), message, true)?;
                let mut client = relay.exchange(&route)?;
                let call = client.acknowledge(request);
                let cursor = relay::answered(&route.peer.division_code, call).await?;
                note.detail("consumer", r.consumer.clone());
                note.detail("acknowledged", cursor.acknowledged_sequence);
                return Ok(cursor);
            }
            let read = ReadRequest::right_only(&r.dataset);
            let (_, dataset, _) = self.readable(&caller, &read, &note).await?;
            if r.sequence > dataset.last_sequence {
                return Err(Error::invalid(
                    "sequence",
                    format!(
                        "is {}, beyond the dataset's last sequence {}",
                        r.sequence, dataset.last_sequence
                    ),
                ));
            }
            let cursor = ConsumerCursor {
                dataset: dataset.id,
                department: department.to_string(),
                consumer: r.consumer.clone(),
                acknowledged: r.sequence,
                updated_at: crate::clock::now(),
            };
            let saved = self.store.acknowledge(&cursor).await?;
            note.detail("consumer", saved.consumer.clone());
            note.detail("acknowledged", saved.acknowledged);
            Ok(pb::ConsumerCursor {
                dataset: saved.dataset,
                consumer: saved.consumer,
                acknowledged_sequence: saved.acknowledged,
                updated_at: Some(timestamp(saved.updated_at)),
            })
        })
        .await
    }

    async fn get_consumer(
        &self,
        request: Request<pb::GetConsumerRequest>,
    ) -> Result<Response<pb::ConsumerCursor>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let (caller, relayed) = self.auth.reader(&request).await?;
            let r = request.get_ref();
            rules::validate_consumer(&r.consumer)?;
            let department = caller
                .department()
                .ok_or_else(|| Error::PermissionDenied("consumers belong to departments".into()))?;
            if let Some((relay, route)) = self.route(&r.dataset, &note).await? {
                let message = pb::GetConsumerRequest {
                    dataset: route.dataset.clone(),
                    ..r.clone()
                };
                let request = relay.request(&caller, relayed.as_ref(), message, true)?;
                let mut client = relay.exchange(&route)?;
                let call = client.get_consumer(request);
                return relay::answered(&route.peer.division_code, call).await;
            }
            let read = ReadRequest::right_only(&r.dataset);
            self.readable(&caller, &read, &note).await?;
            let found = self.store.get_consumer(&r.dataset, department, &r.consumer).await?;
            let c = found.ok_or_else(|| Error::NotFound(format!("consumer '{}' of {}", r.consumer, r.dataset)))?;
            Ok(pb::ConsumerCursor {
                dataset: c.dataset,
                consumer: c.consumer,
                acknowledged_sequence: c.acknowledged,
                updated_at: Some(timestamp(c.updated_at)),
            })
        })
        .await
    }

    async fn start_upload(
        &self,
        request: Request<pb::StartUploadRequest>,
    ) -> Result<Response<pb::UploadStatus>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.into_inner();
            let entry = self.entry(&caller, &r.dataset).await?;
            note.about(&entry.resource_code, &entry.provider_code);
            note.detail("file", r.file_name.clone());
            note.detail("size", r.size);
            rules::publish(&caller, &entry)?;
            let dataset = self.dataset(&r.dataset).await?;
            if dataset.kind != DatasetKind::File {
                return Err(Error::FailedPrecondition(format!(
                    "{} is a table dataset: publish records to it",
                    dataset.id
                )));
            }
            rules::validate_file_name(&r.file_name)?;
            if r.size > self.limits.max_file_bytes {
                return Err(Error::ResourceExhausted(format!(
                    "the file is {} bytes; at most {}",
                    r.size, self.limits.max_file_bytes
                )));
            }
            let digest = r.sha256.to_ascii_lowercase();
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::invalid(
                    "sha256",
                    "must be the file's SHA-256 as 64 hexadecimal digits",
                ));
            }
            let upload = Upload {
                id: uuid::Uuid::new_v4().to_string(),
                dataset: dataset.id,
                file_name: r.file_name,
                size: r.size,
                sha256: digest,
                received: 0,
                sequence: None,
                started_by: caller.actor(),
                started_at: crate::clock::now(),
            };
            let mut upload = self.store.start_upload(&upload).await?;
            if upload.size == 0 {
                upload = self.finish_upload(upload).await?;
                note.detail("complete", true);
            }
            Ok(Self::upload_status(&upload))
        })
        .await
    }

    async fn get_upload_status(
        &self,
        request: Request<pb::GetUploadStatusRequest>,
    ) -> Result<Response<pb::UploadStatus>, Status> {
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let mut upload = self.own_upload(&caller, &request.get_ref().upload_id).await?;
            // All bytes arrived but the call that sent the last ones broke before it finished
            // the upload: finish it now.
            if upload.sequence.is_none() && upload.received == upload.size {
                upload = self.finish_upload(upload).await?;
            }
            Ok(Self::upload_status(&upload))
        })
        .await
    }

    async fn upload_chunks(
        &self,
        request: Request<Streaming<pb::FileChunk>>,
    ) -> Result<Response<pb::UploadStatus>, Status> {
        let note = CallNote::of(&request);
        let caller = self.auth.caller(&request).await.map_err(to_status)?;
        let mut chunks = request.into_inner();
        answer(async {
            let mut upload: Option<Upload> = None;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(broken_upload)?;
                let current = match upload.take() {
                    Some(u) if u.id == chunk.upload_id => u,
                    _ => self.own_upload(&caller, &chunk.upload_id).await?,
                };
                if current.sequence.is_some() {
                    return Err(Error::FailedPrecondition(format!(
                        "upload {} is already complete",
                        current.id
                    )));
                }
                note.about(&current.dataset, caller.department().unwrap_or_default());
                note.detail("upload", current.id.clone());
                let mut next = self.store.append_upload(&current.id, chunk.offset, &chunk.data).await?;
                note.detail("received", next.received);
                if next.received == next.size {
                    next = self.finish_upload(next).await?;
                    note.detail("complete", true);
                }
                upload = Some(next);
            }
            let upload = upload.ok_or_else(|| Error::invalid("upload_id", "the stream carried no chunk"))?;
            Ok(Self::upload_status(&upload))
        })
        .await
    }

    type DownloadFileStream = Stream<pb::FileData>;

    async fn download_file(
        &self,
        request: Request<pb::DownloadFileRequest>,
    ) -> Result<Response<Self::DownloadFileStream>, Status> {
        let note = CallNote::of(&request);
        let (caller, relayed) = self.auth.reader(&request).await.map_err(to_status)?;
        let r = request.into_inner();
        if let Some((relay, route)) = self.route(&r.dataset, &note).await.map_err(to_status)? {
            let peer = route.peer.division_code.clone();
            note.detail("file", r.file_name.clone());
            let message = pb::DownloadFileRequest {
                dataset: route.dataset.clone(),
                // A grant made there, named here as `<origin hub>:<id>`, as the peer knows it.
                grant_id: route.name(&r.grant_id),
                ..r
            };
            let request = relay
                .request(&caller, relayed.as_ref(), message, false)
                .map_err(to_status)?;
            let mut client = relay.exchange(&route).map_err(to_status)?;
            let call = client.download_file(request);
            let upstream = relay::answered(&peer, call).await.map_err(to_status)?;
            self.open_stream(&note, None).await?;
            // The holding hub's trail counts the file delivered; this one notes the stream's end.
            let stream = self.relay_stream((note, (caller, relayed)), peer, upstream, |_: &pb::FileData| 0, false);
            return Ok(Response::new(stream));
        }
        let read = ReadRequest::records(&r.dataset, &r.grant_id, &r.purpose);
        self.readable(&caller, &read, &note).await.map_err(to_status)?;
        rules::validate_file_name(&r.file_name).map_err(to_status)?;
        let file = self
            .store
            .current_file(&r.dataset, &r.file_name)
            .await
            .map_err(to_status)?;
        let file =
            file.ok_or_else(|| to_status(Error::NotFound(format!("file '{}' in {}", r.file_name, r.dataset))))?;
        if r.offset > file.size {
            return Err(to_status(Error::invalid(
                "offset",
                format!("is past the end of the {}-byte file", file.size),
            )));
        }
        note.detail("file", file.file_name.clone());
        note.detail("size", file.size);
        if r.offset > 0 {
            note.detail("resumed_at", r.offset);
        }
        self.open_stream(&note, None).await?;
        let mut rights = self.rights((caller, relayed), &r.dataset, &r.grant_id, &r.purpose);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let api = self.clone_for_task();
        let start = r.offset;
        tokio::spawn(async move {
            let mut offset = start;
            let mut first = true;
            let mut view = None;
            let outcome = loop {
                if !first && offset >= file.size {
                    break Ok(());
                }
                if let Err(e) = rights.recheck(&mut view, &[]).await {
                    break Err(to_status(e));
                }
                let data = match api.store.read_upload(&file.id, offset, DOWNLOAD_CHUNK).await {
                    Ok(data) => data,
                    Err(e) => break Err(to_status(e)),
                };
                if data.is_empty() && offset < file.size {
                    break Err(Status::internal("the stored file ends early"));
                }
                let length = data.len() as u64;
                let message = pb::FileData {
                    size: if first { file.size } else { 0 },
                    sha256: if first { file.sha256.clone() } else { String::new() },
                    data,
                };
                first = false;
                if tx.send(Ok(message)).await.is_err() {
                    break Ok(());
                }
                offset += length;
            };
            note.detail("bytes", offset - start);
            api.close_stream(&note, &tx, outcome, usize::from(offset >= file.size))
                .await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Keeps a live read's rights decided while it streams: re-checks them every RIGHTS_RECHECK, and
/// at once when this hub revokes a grant, so that a revocation (here or on another hub node), an
/// expiry, a withdrawal or a deactivation ends the stream with the refusal.
struct Rights {
    api: Arc<ExchangeApi>,
    caller: Caller,
    dataset: String,
    grant_id: String,
    purpose: String,
    checked: tokio::time::Instant,
    revoked: watch::Receiver<u64>,
    /// Re-check at the next turn whatever the time.
    force: bool,
    /// The peer hub that relays this read, which must stay registered.
    relayed: Option<Relayed>,
}

impl Rights {
    /// Updates the view records are shaped with, or returns the refusal that ends the stream.
    async fn recheck(&mut self, view: &mut Option<RecordView>, key: &[String]) -> Result<()> {
        let revoked = self.revoked.has_changed().unwrap_or(false);
        if !(self.force || revoked || self.checked.elapsed() >= RIGHTS_RECHECK) {
            return Ok(());
        }
        self.revoked.borrow_and_update();
        self.force = false;
        self.checked = tokio::time::Instant::now();
        match &self.relayed {
            Some(relayed) => self.api.auth.still_peer(relayed).await?,
            None => self.api.auth.still_active(&self.caller).await?,
        }
        let read = ReadRequest::records(&self.dataset, &self.grant_id, &self.purpose);
        let (_, _, basis) = authorise_read(self.api.store.as_ref(), &self.caller, &read, None).await?;
        *view = basis.view(key);
        Ok(())
    }
}

/// How tonic says that a request stream ended in the middle of a message (an INTERNAL status).
const ENDED_MID_MESSAGE: &str = "Unexpected EOF decoding stream.";

/// A client stream that failed on the caller's side, as the caller's fault: a message that does
/// not decode (the codec's INVALID_ARGUMENT), one over the size limit (RESOURCE_EXHAUSTED), or a
/// request that ended in the middle of a message, which tonic calls INTERNAL and which is no fault
/// of the hub's (INVALID_ARGUMENT). Other failures (a broken connection) are returned as they are.
fn callers_fault(status: Status) -> Status {
    let status = size_limit_status(status);
    if status.code() == tonic::Code::Internal && status.message() == ENDED_MID_MESSAGE {
        return Status::invalid_argument("the request ended in the middle of a message");
    }
    status
}

/// Why a stream of file chunks stopped before its end: a chunk that is not a valid message, is
/// too large or is cut short is the caller's fault, told as such; anything else broke the stream,
/// and the caller resumes from the bytes received.
fn broken_upload(status: Status) -> Error {
    let status = callers_fault(status);
    match status.code() {
        tonic::Code::InvalidArgument => Error::invalid("chunk", status.message()),
        tonic::Code::ResourceExhausted => Error::ResourceExhausted(status.message().to_string()),
        _ => Error::Unavailable(format!("the upload stream broke: {}", status.message())),
    }
}

/// A message above the decoding limit, met inside a stream, as RESOURCE_EXHAUSTED (tonic says
/// OUT_OF_RANGE; see `server::size_limit_is_resource_exhausted` for unary calls).
fn size_limit_status(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
        Status::resource_exhausted(status.message().to_string())
    } else {
        status
    }
}

impl ExchangeApi {
    fn rights(
        &self,
        (caller, relayed): (Caller, Option<Relayed>),
        dataset: &str,
        grant_id: &str,
        purpose: &str,
    ) -> Rights {
        Rights {
            api: self.clone_for_task(),
            caller,
            dataset: dataset.to_string(),
            grant_id: grant_id.to_string(),
            purpose: purpose.to_string(),
            checked: tokio::time::Instant::now(),
            revoked: self.revocations.subscribe(),
            force: false,
            relayed,
        }
    }

    /// Records that a read stream opens, before any record leaves: if the trail cannot be
    /// written, the stream does not start.
    async fn open_stream(&self, note: &CallNote, consumer: Option<&str>) -> std::result::Result<(), Status> {
        note.detail("phase", "open");
        self.audit
            .open_stream(note.event("OK"), consumer)
            .await
            .map_err(to_status)
    }

    /// Records how a read stream ended and how much it delivered, then sends its error if any.
    async fn close_stream<T>(
        &self,
        note: &CallNote,
        tx: &mpsc::Sender<std::result::Result<T, Status>>,
        outcome: std::result::Result<(), Status>,
        delivered: usize,
    ) {
        note.detail("phase", "end");
        note.detail("records", delivered);
        let code = outcome.as_ref().err().map_or(tonic::Code::Ok, Status::code);
        if let Err(status) = &outcome {
            note.detail("message", status.message().to_string());
        }
        let _ = self.audit.end_stream(note.event(code_name(code))).await;
        if let Err(status) = outcome {
            let _ = tx.send(Err(status)).await;
        }
    }

    /// A handle for tasks that outlive the call that started them.
    fn clone_for_task(&self) -> Arc<ExchangeApi> {
        Arc::new(ExchangeApi {
            store: self.store.clone(),
            auth: self.auth.clone(),
            registry: self.registry.clone(),
            feed: self.feed.clone(),
            limits: self.limits.clone(),
            stopping: self.stopping.clone(),
            audit: self.audit.clone(),
            revocations: self.revocations.clone(),
            metrics: self.metrics.clone(),
            skip_validation: self.skip_validation,
            relay: self.relay.clone(),
        })
    }

    /// Checks a fully received upload against its declared digest and makes it the file's
    /// current version.
    async fn finish_upload(&self, upload: Upload) -> Result<Upload> {
        let digest = self.digest(&upload).await?;
        if digest != upload.sha256 {
            return Err(Error::FailedPrecondition(format!(
                "the received bytes have SHA-256 {digest}, not the declared {}; start the upload again",
                upload.sha256
            )));
        }
        let metadata = serde_json::json!({
            "file_name": upload.file_name, "size": upload.size, "sha256": upload.sha256, "upload_id": upload.id,
        });
        let done = self
            .store
            .complete_upload(&upload.id, &metadata.to_string(), crate::clock::now())
            .await?;
        if let Some(sequence) = done.sequence {
            self.feed.notify(&done.dataset, sequence);
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(sequence: u64, bytes: usize) -> StoredChange {
        StoredChange {
            sequence,
            op: ChangeOp::Upsert,
            key: format!("[{sequence}]"),
            record: Some(vec![b'x'; bytes]),
            published_at: crate::clock::now(),
        }
    }

    #[test]
    fn a_client_stream_that_fails_on_the_callers_side_is_the_callers_fault() {
        let cut = callers_fault(Status::internal(ENDED_MID_MESSAGE));
        assert_eq!(cut.code(), tonic::Code::InvalidArgument);
        let big = callers_fault(Status::out_of_range(
            "Error, decoded message length too large: found 9 bytes, the limit is: 8 bytes",
        ));
        assert_eq!(big.code(), tonic::Code::ResourceExhausted);
        assert_eq!(callers_fault(Status::unknown("h2 error")).code(), tonic::Code::Unknown);
        let broken = broken_upload(Status::internal(ENDED_MID_MESSAGE));
        assert!(matches!(broken, Error::InvalidArgument(_)), "{broken:?}");
    }

    #[test]
    fn pages_are_cut_to_fit_one_message() {
        let mut small: Vec<_> = (1..=10).map(|s| change(s, 100)).collect();
        assert!(!fit_message(&mut small));
        assert_eq!(small.len(), 10);
        let mut large: Vec<_> = (1..=10).map(|s| change(s, 900 * 1024)).collect();
        assert!(fit_message(&mut large));
        assert_eq!(large.len(), 2);
        assert_eq!(large.last().map(|c| c.sequence), Some(2));
        let mut huge = vec![change(1, 3 * 1024 * 1024), change(2, 10)];
        assert!(fit_message(&mut huge));
        assert_eq!(huge.len(), 1, "one record always goes, even a large one");
    }

    #[test]
    fn changes_read_ahead_go_out_in_order_as_batches_that_fit() {
        let sequences = |m: &[StoredChange]| m.iter().map(|c| c.sequence).collect::<Vec<_>>();
        let mut pending: VecDeque<_> = (1..=7).map(|s| change(s, 100)).collect();
        assert_eq!(sequences(&next_message(&mut pending, 3)), [1, 2, 3]);
        assert_eq!(sequences(&next_message(&mut pending, 3)), [4, 5, 6]);
        assert_eq!(sequences(&next_message(&mut pending, 3)), [7]);
        assert!(next_message(&mut pending, 3).is_empty());

        let mut pending: VecDeque<_> = (1..=5).map(|s| change(s, 900 * 1024)).collect();
        assert_eq!(sequences(&next_message(&mut pending, 500)), [1, 2], "cut by bytes");
        assert_eq!(sequences(&next_message(&mut pending, 500)), [3, 4]);
        let mut pending: VecDeque<_> = [change(1, 3 * 1024 * 1024), change(2, 10)].into();
        assert_eq!(
            sequences(&next_message(&mut pending, 500)),
            [1],
            "a large one goes alone"
        );
        assert_eq!(sequences(&next_message(&mut pending, 500)), [2]);
    }
}
