//! The audit trail in the hub: one writer that appends events to the hash chain in groups, a
//! tower layer that gives every call a request id and records its outcome, and the per-call note
//! through which handlers say what a call was about.
//!
//! Who records what:
//! - the layer: every refusal (PERMISSION_DENIED, UNAUTHENTICATED) of every RPC, and every call of
//!   an RPC that changes something or reads records, with the handler's note (target, counts);
//! - the handlers of streams (Publish batches, Snapshot, Subscribe, DownloadFile): one event per
//!   committed batch or per finished stream, with counts — never one per record;
//! - the accept loop: refused TLS handshakes.
//!
//! An event is written before the call's answer leaves the hub; if the trail cannot be written,
//! the caller gets UNAVAILABLE instead of an unaudited answer.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tonic::codegen::http;
use xinqiao_domain::audit::{AuditEvent, ChainLinker};
use xinqiao_domain::{Error, Result};
use xinqiao_store::{OpenStream, Store};

use crate::tls::PeerInfo;

/// Events appended in one transaction at most (a group commit of concurrent calls).
const GROUP: usize = 256;
/// The request id header: taken from the caller when it sends a sane one, else made up; echoed.
pub const REQUEST_ID: &str = "x-request-id";

/// The writer of the trail. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
    linker: ChainLinker,
    store: Arc<dyn Store>,
    /// This hub node (`HubNode::id`), which serves the streams it notes as open.
    node_id: Arc<str>,
}

struct Pending {
    events: Vec<AuditEvent>,
    done: oneshot::Sender<std::result::Result<(), String>>,
}

impl AuditLog {
    /// Starts the writer. It runs until the last handle is dropped.
    pub fn start(store: Arc<dyn Store>, linker: ChainLinker, node_id: &str) -> AuditLog {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(write_groups(store.clone(), linker.clone(), rx));
        AuditLog {
            tx,
            linker,
            store,
            node_id: node_id.into(),
        }
    }

    /// Records a read stream's "open" event, having noted the stream as open on this node: if the
    /// node dies before the stream ends, another node (or this one restarted) ends it in the
    /// trail (`end_orphaned_streams`). Either both happen or the stream is refused.
    pub async fn open_stream(&self, open: AuditEvent, consumer: Option<&str>) -> Result<()> {
        let stream = OpenStream {
            request_id: open.request_id.clone(),
            node_id: self.node_id.to_string(),
            actor: open.actor.clone(),
            action: open.action.clone(),
            target: open.target.clone(),
            about: open.about.clone(),
            consumer: consumer.map(str::to_string),
            opened_at: open.at,
        };
        self.store.record_open_stream(&stream).await.map_err(|e| {
            tracing::error!(error = %e, "cannot note a stream as open");
            Error::Unavailable("the audit trail cannot be written; nothing was answered".into())
        })?;
        self.record(open).await
    }

    /// Records a read stream's "end" event and forgets it as open.
    pub async fn end_stream(&self, end: AuditEvent) -> Result<()> {
        self.record(end.clone()).await?;
        if let Err(error) = self.store.forget_open_stream(&end.request_id).await {
            // Its end is in the trail; a later recovery would only add a second "end".
            tracing::warn!(%error, request_id = %end.request_id, "a finished stream is still noted as open");
        }
        Ok(())
    }

    /// How links are made, for events that the store appends inside another transaction
    /// (publishes).
    pub fn linker(&self) -> &ChainLinker {
        &self.linker
    }

    /// Appends events and waits until they are stored.
    pub async fn record_all(&self, events: Vec<AuditEvent>) -> Result<()> {
        let (done, stored) = oneshot::channel();
        let unavailable = || Error::Unavailable("the audit trail cannot be written; nothing was answered".into());
        self.tx
            .send(Pending { events, done })
            .await
            .map_err(|_| unavailable())?;
        match stored.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(detail)) => {
                tracing::error!(%detail, "audit events could not be stored");
                Err(unavailable())
            }
            Err(_) => Err(unavailable()),
        }
    }

    pub async fn record(&self, event: AuditEvent) -> Result<()> {
        self.record_all(vec![event]).await
    }

    /// Records without waiting, for callers that cannot wait (the TLS accept loop). A failure
    /// is logged.
    pub fn record_detached(&self, event: AuditEvent) {
        let log = self.clone();
        tokio::spawn(async move {
            let _ = log.record(event).await;
        });
    }
}

/// Appends what is queued in groups: while one group is being written, the next one gathers.
async fn write_groups(store: Arc<dyn Store>, linker: ChainLinker, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut count = group[0].events.len();
        while count < GROUP {
            match rx.try_recv() {
                Ok(next) => {
                    count += next.events.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let events: Vec<AuditEvent> = group.iter().flat_map(|p| p.events.iter().cloned()).collect();
        let result = store
            .append_audit(&events, &linker)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        if result.is_err() && group.len() > 1 {
            // One event the store refuses must not fail the calls it was grouped with: each is
            // tried alone, and only what still fails is answered as failed.
            for pending in group {
                let alone = store
                    .append_audit(&pending.events, &linker)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let _ = pending.done.send(alone);
            }
            continue;
        }
        for pending in group {
            let _ = pending.done.send(result.clone());
        }
    }
}

/// The longest target, department or detail text an event keeps of what a caller sent.
const NOTED_CHARS: usize = 200;
/// The longest detail value (as JSON) an event keeps.
const DETAIL_CHARS: usize = 2_000;

/// A detail value of bounded size: long text shortened, a large list or object kept as the start
/// of its JSON text.
fn bounded(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(xinqiao_domain::text::shorten(&text, DETAIL_CHARS)),
        Value::Array(_) | Value::Object(_) => {
            let text = value.to_string();
            if text.chars().count() > DETAIL_CHARS {
                Value::String(xinqiao_domain::text::shorten(&text, DETAIL_CHARS))
            } else {
                value
            }
        }
        small => small,
    }
}

/// What a handler says about its call, for the event the layer or the handler records.
#[derive(Clone)]
pub struct CallNote(Arc<Mutex<Note>>);

#[derive(Default)]
struct Note {
    actor: String,
    action: String,
    request_id: String,
    target: String,
    about: String,
    detail: Map<String, Value>,
}

impl CallNote {
    fn new(actor: String, action: String, request_id: String) -> CallNote {
        CallNote(Arc::new(Mutex::new(Note {
            actor,
            action,
            request_id,
            ..Note::default()
        })))
    }

    /// The note of a call that comes through another edge than gRPC (the HTTP edge), which
    /// records the event itself.
    pub fn for_call(peer: Option<&PeerInfo>, action: &str, request_id: &str) -> CallNote {
        CallNote::new(actor_of(peer), action.to_string(), request_id.to_string())
    }

    /// The note of a call (a detached one when the call did not come through the layer).
    pub fn of<T>(request: &tonic::Request<T>) -> CallNote {
        request.extensions().get::<CallNote>().cloned().unwrap_or_else(|| {
            CallNote::new(
                actor_of(request.extensions().get::<PeerInfo>()),
                String::new(),
                uuid::Uuid::now_v7().to_string(),
            )
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Note) -> R) -> R {
        // A poisoned note only means a handler panicked while holding it; its contents are plain
        // strings and still usable.
        let mut guard = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// What the call is about: a dataset, entry, department, request, grant or subject; and the
    /// department whose data or resource that is (empty when none).
    /// Often noted from the caller's request before it is checked: kept to a bounded length, so
    /// that a refused call cannot write megabytes into the trail.
    pub fn about(&self, target: &str, department: &str) {
        self.with(|n| {
            n.target = xinqiao_domain::text::shorten(target, NOTED_CHARS);
            n.about = xinqiao_domain::text::shorten(department, NOTED_CHARS);
        });
    }

    pub fn detail(&self, key: &str, value: impl Into<Value>) {
        self.with(|n| {
            n.detail.insert(key.to_string(), bounded(value.into()));
        });
    }

    pub fn request_id(&self) -> String {
        self.with(|n| n.request_id.clone())
    }

    /// The event for this call with the given outcome (`OK` or a status code name).
    pub fn event(&self, outcome: &str) -> AuditEvent {
        self.with(|n| AuditEvent {
            sequence: 0,
            at: crate::clock::now(),
            actor: n.actor.clone(),
            action: n.action.clone(),
            target: n.target.clone(),
            about: n.about.clone(),
            outcome: outcome.to_string(),
            request_id: n.request_id.clone(),
            detail: Value::Object(n.detail.clone()).to_string(),
        })
    }
}

/// The actor as the trail writes it: the certificate's identity, or the peer address when the
/// certificate names none.
fn actor_of(peer: Option<&PeerInfo>) -> String {
    match peer {
        Some(PeerInfo { principal: Some(p), .. }) => p.to_string(),
        Some(PeerInfo { remote, .. }) => format!("peer:{remote}"),
        None => "unknown".into(),
    }
}

/// The event of a refused TLS handshake, or of an open connection closed because its
/// certificate is no longer accepted (revoked or expired since it connected).
pub fn handshake_refused(remote: std::net::SocketAddr, error: &std::io::Error) -> AuditEvent {
    let action = if error.kind() == std::io::ErrorKind::PermissionDenied {
        "close_connection"
    } else {
        "authenticate"
    };
    let reason = error.to_string();
    AuditEvent {
        sequence: 0,
        at: crate::clock::now(),
        actor: format!("peer:{remote}"),
        action: action.into(),
        target: String::new(),
        about: String::new(),
        outcome: "UNAUTHENTICATED".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
        detail: serde_json::json!({ "reason": reason }).to_string(),
    }
}

/// How the layer treats a method's successful calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Reads catalogue metadata, schemas, or the caller's own workflow items: only refusals
    /// are recorded.
    Lookup,
    /// The handler records its own events (per batch or per finished stream); the layer records
    /// only a failure that ends the call before it starts.
    SelfAudited,
    /// Changes something or reads records: every call is recorded.
    Recorded,
}

fn kind(method: &str) -> Kind {
    match method {
        "WhoAmI"
        | "GetDepartment"
        | "ListDepartments"
        | "GetEntry"
        | "ListEntryVersions"
        | "SearchEntries"
        | "ExportCatalog"
        | "GetSchema"
        | "ListSubjects"
        | "ListSchemaVersions"
        | "GetCompatibility"
        | "CheckCompatibility"
        | "ValidateRecords"
        | "GetEntrySchema"
        | "DraftSchemaFromEntry"
        | "GetDataset"
        | "ListDatasets"
        | "GetConsumer"
        | "GetUploadStatus"
        | "GetRequest"
        | "ListRequests"
        | "GetGrant"
        | "ListGrants"
        | "GetReport"
        | "ListReports"
        | "GetScorecard"
        | "GetRanking"
        | "GetInterface"
        | "ListInterfaces" => Kind::Lookup,
        "Publish" | "PublishStream" | "Snapshot" | "Subscribe" | "DownloadFile" => Kind::SelfAudited,
        _ => Kind::Recorded,
    }
}

/// The canonical name of a gRPC status code, as the trail writes outcomes.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn sane_request_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Percent-decodes a `grpc-message` header (the gRPC spec's encoding); a '%' that starts no
/// escape stays as it is.
pub(crate) fn grpc_message(value: &str) -> String {
    let bytes = value.as_bytes();
    let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which edge a call came through when it was not a gRPC client's own: set in process by the
/// edge that makes the call (the web console), never read from the network.
#[derive(Clone, Copy, Debug)]
pub struct Via(pub &'static str);

/// The tower layer that audits every xinqiao call (see the module comment).
#[derive(Clone)]
pub struct AuditLayer {
    log: AuditLog,
}

impl AuditLayer {
    pub fn new(log: AuditLog) -> Self {
        Self { log }
    }
}

impl<S> tower::Layer<S> for AuditLayer {
    type Service = Audited<S>;

    fn layer(&self, inner: S) -> Audited<S> {
        Audited {
            inner,
            log: self.log.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Audited<S> {
    inner: S,
    log: AuditLog,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Audited<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<std::result::Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(method) = request
            .uri()
            .path()
            .strip_prefix("/xinqiao.v1.")
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, method)| method.to_string())
        else {
            // Health and reflection: nothing to audit.
            return Box::pin(inner.call(request));
        };
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| sane_request_id(v))
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let actor = actor_of(request.extensions().get::<PeerInfo>());
        let note = CallNote::new(actor, method.clone(), request_id.clone());
        if let Some(Via(edge)) = request.extensions().get::<Via>() {
            note.detail("via", *edge);
        }
        request.extensions_mut().insert(note.clone());
        let log = self.log.clone();
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            let headers = response.headers_mut();
            if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                headers.insert(REQUEST_ID, value);
            }
            // A status in the headers is a call that ended before any message (trailers-only);
            // without one, a unary call succeeded and a stream has started.
            let code = headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(tonic::Code::from_i32)
                .unwrap_or(tonic::Code::Ok);
            let refused = matches!(code, tonic::Code::PermissionDenied | tonic::Code::Unauthenticated);
            let record = match kind(&method) {
                Kind::Lookup => refused,
                Kind::SelfAudited => code != tonic::Code::Ok,
                Kind::Recorded => true,
            };
            if !record {
                return Ok(response);
            }
            if code != tonic::Code::Ok
                && let Some(message) = headers.get("grpc-message").and_then(|v| v.to_str().ok())
            {
                note.detail("message", grpc_message(message));
            }
            if let Err(e) = log.record(note.event(code_name(code))).await {
                // Nothing leaves the hub unaudited: the answer is replaced by the failure.
                return Ok(crate::status::to_status(e).into_http());
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_callers_are_bounded() {
        assert!(sane_request_id("4f0c-11:req.7_a"));
        assert!(!sane_request_id(""));
        assert!(!sane_request_id(&"a".repeat(65)));
        assert!(!sane_request_id("a b"));
        assert!(!sane_request_id("a\nb"));
    }

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(grpc_message("not%20shared%20(%E4%B8%8D)"), "not shared (不)");
        assert_eq!(grpc_message("100%"), "100%");
        assert_eq!(grpc_message("%zz"), "%zz");
        assert_eq!(grpc_message("%é%4"), "%é%4");
    }

    #[test]
    fn methods_sort_into_kinds() {
        assert_eq!(kind("GetEntry"), Kind::Lookup);
        assert_eq!(kind("Fetch"), Kind::Recorded);
        assert_eq!(kind("ApproveRequest"), Kind::Recorded);
        assert_eq!(kind("Subscribe"), Kind::SelfAudited);
        assert_eq!(
            kind("ListEvents"),
            Kind::Recorded,
            "reading the trail is itself recorded"
        );
    }
}
