//! Fan-out of relayed subscriptions: records cross once per hub pair, however many of this hub's
//! departments follow the same dataset on a peer — as long as the peer shapes them alike.
//!
//! The peer (the hub holding the dataset, or one relaying from it) projects and masks per grant,
//! so two followers may share bytes only when the peer gives them the same view. It says which
//! view a relayed read gets in the answer's headers, before any record: [`VIEW`], a digest of
//! the dataset and the fields, masks and key it shapes records with, and [`AFTER`], the sequence
//! the stream starts after (the consumer's cursor, when one is named).
//!
//! Here, per (peer, dataset as the peer names it, view), at most one shared stream is live: the
//! upstream of the follower that found none (its *carrier*), read by one task and broadcast.
//! Every follower opens its own upstream first, so that the peer decides and audits its read as
//! its own. Then it keeps reading that upstream until its position (the last sequence it passed
//! on) has reached the shared stream's, joins the shared stream — from then on receiving
//! whatever the shared stream broadcasts after its position, duplicates trimmed — and closes
//! its own upstream. Its delivery stays gap-free and duplicate-free across the switch, because
//! the join is decided under the same lock under which the shared stream moves its position.
//!
//! A follower riding on another's upstream is re-checked on the peer in its own name every
//! [`CHECK_INTERVAL`]: a relayed Fetch after the end of the dataset, which moves no record but
//! is decided (grant, purpose, standing) and audited there like any read, and answers the view.
//! A refusal ends that follower alone with the peer's words; a changed view sends it back to an
//! upstream of its own. When the carrier's upstream ends (its department cut off, the peer gone)
//! or the carrier leaves, the shared stream ends and the others re-open from their positions,
//! one of them becoming the next carrier; a follower that falls behind the broadcast does the
//! same. What is not shared: the catch-up of a follower that starts behind the live tail, which
//! reads through its own upstream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc};
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Status, Streaming};
use xinqiao_domain::access::RecordView;
use xinqiao_domain::identity::Caller;
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::exchange_service_client::ExchangeServiceClient;

use super::relay::{CALL_TIMEOUT, Relay, Route};
use crate::auth::Relayed;

/// The response header naming the view a relayed read gets (see [`view_digest`]).
pub const VIEW: &str = "x-xinqiao-view";
/// The response header of a relayed Subscribe: the sequence the stream starts after.
pub const AFTER: &str = "x-xinqiao-after";
/// How often a follower riding on another's upstream has its rights re-checked on the peer.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(3);
/// Messages a shared stream holds for its slowest follower; one further behind re-opens.
const BROADCAST_BUFFER: usize = 256;

/// The digest naming how records of `dataset` are shaped for a reader: two reads with the same
/// digest receive the same bytes. `None`: whole records (the provider, or a grant of all fields).
pub fn view_digest(dataset: &str, view: Option<&RecordView>) -> String {
    let mut text = format!("dataset={dataset}\n");
    match view {
        None => text.push_str("whole\n"),
        Some(view) => {
            // Each list in the order it shapes with; the rules by their debug form, which names
            // every parameter (the digest is only ever compared among answers of one hub).
            text.push_str(&format!("fields={}\n", view.fields.join(",")));
            for (field, rule) in &view.masks {
                text.push_str(&format!("mask={field}:{rule:?}\n"));
            }
            text.push_str(&format!("key={}\n", view.key.join(",")));
        }
    }
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sets the fan-out headers of a relayed read's answer.
pub fn set_headers(metadata: &mut MetadataMap, view: &str, after: Option<u64>) {
    if let Ok(value) = view.parse() {
        metadata.insert(VIEW, value);
    }
    if let Some(after) = after
        && let Ok(value) = after.to_string().parse()
    {
        metadata.insert(AFTER, value);
    }
}

/// The fan-out headers of a peer's answer, as they came.
pub fn headers_of(metadata: &MetadataMap) -> (Option<String>, Option<u64>) {
    let text = |name| metadata.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    (text(VIEW), text(AFTER).and_then(|a| a.parse().ok()))
}

/// Which shared stream a follower may join.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    peer: String,
    dataset: String,
    view: String,
}

/// What a shared stream broadcasts.
#[derive(Clone)]
enum Event {
    Batch(Arc<pb::ChangeBatch>),
    /// The carrier's upstream failed with the peer's status (its refusal, or the peer gone).
    Failed(Status),
    /// The carrier's upstream ended without a status, or the carrier left.
    Ended,
}

struct SharedState {
    /// Everything after this sequence will be broadcast.
    position: u64,
    sender: broadcast::Sender<Event>,
    /// Set once the stream has ended: nobody joins it any more.
    ended: bool,
}

/// One live upstream, broadcast to the followers that joined it.
struct Shared {
    carrier: u64,
    state: Mutex<SharedState>,
    pump: Mutex<Option<AbortHandle>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ends the stream: the followers are told, the upstream is closed.
    fn end(&self, event: Event) {
        let mut state = self.state();
        if !state.ended {
            state.ended = true;
            let _ = state.sender.send(event);
        }
        drop(state);
        if let Some(pump) = self.pump.lock().unwrap_or_else(|p| p.into_inner()).take() {
            pump.abort();
        }
    }
}

/// The shared streams of one hub.
#[derive(Default)]
pub struct Fanout {
    streams: Mutex<HashMap<Key, Arc<Shared>>>,
    next_id: AtomicU64,
}

impl Fanout {
    fn streams(&self) -> MutexGuard<'_, HashMap<Key, Arc<Shared>>> {
        self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget(&self, key: &Key, shared: &Arc<Shared>) {
        let mut streams = self.streams();
        if streams.get(key).is_some_and(|s| Arc::ptr_eq(s, shared)) {
            streams.remove(key);
        }
    }
}

/// A relayed subscription of one reader: how to open (and re-open) its own upstream, and how to
/// have its rights checked on the peer.
pub struct Reader {
    pub relay: Relay,
    pub route: Route,
    pub caller: Caller,
    pub relayed: Option<Relayed>,
    /// The subscription as relayed (the dataset as the peer names it).
    pub request: pb::SubscribeRequest,
}

/// An upstream opened for a reader, with the headers that came with it.
pub struct Opened {
    pub upstream: Streaming<pb::ChangeBatch>,
    pub view: Option<String>,
    pub after: Option<u64>,
}

impl Reader {
    fn client(&self) -> Result<ExchangeServiceClient<Channel>, Status> {
        self.relay
            .exchange(&self.route)
            .map_err(|e| Status::unavailable(format!("no channel to the peer: {e}")))
    }

    fn request<T>(&self, message: T, deadline: bool) -> Result<tonic::Request<T>, Status> {
        self.relay
            .request(&self.caller, self.relayed.as_ref(), message, deadline)
            .map_err(|e| Status::permission_denied(e.to_string()))
    }

    /// Opens the reader's own upstream, from `after` when re-opening (the consumer's cursor,
    /// if any, only decides where the first opening starts). Ends within `CALL_TIMEOUT`.
    pub async fn open(&self, after: Option<u64>) -> Result<Opened, Status> {
        let mut message = self.request.clone();
        if let Some(after) = after {
            message.after_sequence = after;
            message.consumer.clear();
        }
        let request = self.request(message, false)?;
        let mut client = self.client()?;
        let response = tokio::time::timeout(CALL_TIMEOUT, client.subscribe(request))
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!("did not answer within {} ms", CALL_TIMEOUT.as_millis()))
            })??;
        let (view, after) = headers_of(response.metadata());
        Ok(Opened {
            upstream: response.into_inner(),
            view,
            after,
        })
    }

    /// The reader's rights decided on the peer as if it read now, and the view it would get: a
    /// Fetch after the end of the dataset, which moves no record.
    async fn check(&self) -> Result<Option<String>, Status> {
        let message = pb::FetchRequest {
            dataset: self.request.dataset.clone(),
            after_sequence: u64::MAX,
            limit: 1,
            purpose: self.request.purpose.clone(),
            grant_id: self.request.grant_id.clone(),
        };
        let request = self.request(message, true)?;
        let mut client = self.client()?;
        let response = tokio::time::timeout(CALL_TIMEOUT, client.fetch(request))
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!("did not answer within {} ms", CALL_TIMEOUT.as_millis()))
            })??;
        Ok(headers_of(response.metadata()).0)
    }
}

/// Where a follower reads from.
enum Source {
    Own(Box<Streaming<pb::ChangeBatch>>),
    Joined {
        shared: Arc<Shared>,
        events: broadcast::Receiver<Event>,
    },
}

/// Passes a reader's relayed subscription on, sharing the upstream with the followers of the
/// same view. `opened` is its own upstream, just opened. The stream yields the peer's batches
/// and statuses as they are (the caller names the peer); it ends without a status when the
/// upstream ended so.
pub fn follow(fanout: Arc<Fanout>, reader: Reader, opened: Opened) -> ReceiverStream<Result<pb::ChangeBatch, Status>> {
    let (tx, rx) = mpsc::channel(4);
    let id = fanout.next_id.fetch_add(1, Ordering::Relaxed);
    let shareable = opened.view.clone().zip(opened.after);
    tokio::spawn(async move {
        let Some((view, after)) = shareable else {
            // A peer that does not say what view it gives: this reader's upstream is its own.
            return pass_through(opened.upstream, tx).await;
        };
        let key = Key {
            peer: reader.route.peer.division_code.clone(),
            dataset: reader.request.dataset.clone(),
            view,
        };
        let mut follower = Follower {
            id,
            fanout,
            reader,
            key,
            position: after,
            tx,
        };
        follower.run(opened.upstream).await;
    });
    ReceiverStream::new(rx)
}

async fn pass_through(mut upstream: Streaming<pb::ChangeBatch>, tx: mpsc::Sender<Result<pb::ChangeBatch, Status>>) {
    loop {
        let message = tokio::select! {
            message = upstream.message() => message,
            _ = tx.closed() => return,
        };
        match message {
            Ok(Some(batch)) => {
                if tx.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
    }
}

struct Follower {
    id: u64,
    fanout: Arc<Fanout>,
    reader: Reader,
    key: Key,
    /// The last sequence passed on to the reader.
    position: u64,
    tx: mpsc::Sender<Result<pb::ChangeBatch, Status>>,
}

/// How a follower's turn ended.
enum Turn {
    Go(Source),
    /// Re-open an upstream of its own from its position.
    Reopen,
    Stop,
}

impl Follower {
    async fn run(&mut self, upstream: Streaming<pb::ChangeBatch>) {
        let mut source = self.settle(upstream);
        loop {
            let turn = match source {
                Source::Own(upstream) => self.own(upstream).await,
                Source::Joined { shared, events } => self.joined(shared, events).await,
            };
            source = match turn {
                Turn::Go(next) => next,
                Turn::Stop => break,
                Turn::Reopen => match self.reader.open(Some(self.position)).await {
                    Ok(opened) => {
                        if let Some(view) = opened.view {
                            self.key.view = view;
                        }
                        self.settle(opened.upstream)
                    }
                    Err(status) => {
                        let _ = self.tx.send(Err(status)).await;
                        break;
                    }
                },
            };
        }
        self.leave();
    }

    /// Joins the shared stream of its view if its position has reached it, closing `upstream`;
    /// makes `upstream` the shared stream if there is none; otherwise keeps reading `upstream`.
    fn settle(&mut self, upstream: Streaming<pb::ChangeBatch>) -> Source {
        let mut streams = self.fanout.streams();
        if let Some(shared) = streams.get(&self.key).cloned() {
            let state = shared.state();
            if state.ended {
                drop(state);
                streams.remove(&self.key);
            } else if state.position <= self.position {
                let events = state.sender.subscribe();
                drop(state);
                return Source::Joined { shared, events };
            } else {
                return Source::Own(Box::new(upstream));
            }
        }
        let (sender, events) = broadcast::channel(BROADCAST_BUFFER);
        let shared = Arc::new(Shared {
            carrier: self.id,
            state: Mutex::new(SharedState {
                position: self.position,
                sender,
                ended: false,
            }),
            pump: Mutex::new(None),
        });
        streams.insert(self.key.clone(), shared.clone());
        drop(streams);
        let pump = tokio::spawn(pump(shared.clone(), upstream));
        *shared.pump.lock().unwrap_or_else(|p| p.into_inner()) = Some(pump.abort_handle());
        Source::Joined { shared, events }
    }

    /// Passes on a batch, without what the reader already has. False: the reader went away.
    async fn pass(&mut self, batch: &pb::ChangeBatch) -> bool {
        let changes: Vec<pb::Change> = batch
            .changes
            .iter()
            .filter(|c| c.sequence > self.position)
            .cloned()
            .collect();
        let Some(last) = changes.last().map(|c| c.sequence) else {
            return true;
        };
        let batch = pb::ChangeBatch {
            changes,
            last_sequence: batch.last_sequence,
        };
        if self.tx.send(Ok(batch)).await.is_err() {
            return false;
        }
        self.position = last;
        true
    }

    /// Reads its own upstream (catching up) until it can join the shared stream.
    async fn own(&mut self, mut upstream: Box<Streaming<pb::ChangeBatch>>) -> Turn {
        let message = tokio::select! {
            message = upstream.message() => message,
            _ = self.tx.closed() => return Turn::Stop,
        };
        match message {
            Ok(Some(batch)) => {
                if !self.pass(&batch).await {
                    return Turn::Stop;
                }
                Turn::Go(self.settle(*upstream))
            }
            Ok(None) => Turn::Stop,
            Err(status) => {
                let _ = self.tx.send(Err(status)).await;
                Turn::Stop
            }
        }
    }

    /// Reads the shared stream; re-checks its rights on the peer while it rides on another's.
    async fn joined(&mut self, shared: Arc<Shared>, mut events: broadcast::Receiver<Event>) -> Turn {
        let carrier = shared.carrier == self.id;
        let mut check = tokio::time::interval(CHECK_INTERVAL);
        check.tick().await;
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = check.tick(), if !carrier => {
                    match self.reader.check().await {
                        Ok(Some(view)) if view == self.key.view => continue,
                        // Shaped otherwise now: back to an upstream of its own.
                        Ok(_) => return self.detach(shared, Turn::Reopen),
                        Err(status) => {
                            let _ = self.tx.send(Err(status)).await;
                            return self.detach(shared, Turn::Stop);
                        }
                    }
                }
                _ = self.tx.closed() => return self.detach(shared, Turn::Stop),
            };
            match event {
                Ok(Event::Batch(batch)) => {
                    if !self.pass(&batch).await {
                        return self.detach(shared, Turn::Stop);
                    }
                }
                Ok(Event::Failed(status)) if carrier => {
                    let _ = self.tx.send(Err(status)).await;
                    return Turn::Stop;
                }
                Ok(Event::Ended) if carrier => return Turn::Stop,
                // Another's upstream ended, or it fell behind the broadcast: its own again.
                Ok(Event::Failed(_) | Event::Ended) | Err(_) => return self.detach(shared, Turn::Reopen),
            }
        }
    }

    /// Leaves a shared stream; the carrier leaving ends it (its upstream is in its name).
    fn detach(&self, shared: Arc<Shared>, turn: Turn) -> Turn {
        if shared.carrier == self.id {
            shared.end(Event::Ended);
            self.fanout.forget(&self.key, &shared);
        }
        turn
    }

    /// Ends whatever this follower carries.
    fn leave(&self) {
        let carried: Vec<(Key, Arc<Shared>)> = self
            .fanout
            .streams()
            .iter()
            .filter(|(_, s)| s.carrier == self.id)
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        for (key, shared) in carried {
            shared.end(Event::Ended);
            self.fanout.forget(&key, &shared);
        }
    }
}

/// Reads the carrier's upstream and broadcasts it, moving the shared position under the lock
/// followers join under.
async fn pump(shared: Arc<Shared>, mut upstream: Streaming<pb::ChangeBatch>) {
    loop {
        let event = match upstream.message().await {
            Ok(Some(batch)) => {
                let mut state = shared.state();
                if let Some(last) = batch.changes.last() {
                    state.position = state.position.max(last.sequence);
                }
                let _ = state.sender.send(Event::Batch(Arc::new(batch)));
                continue;
            }
            Ok(None) => Event::Ended,
            Err(status) => Event::Failed(status),
        };
        let mut state = shared.state();
        if !state.ended {
            state.ended = true;
            let _ = state.sender.send(event);
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xinqiao_domain::masking::MaskRule;

    fn view(masks: &[(&str, MaskRule)]) -> RecordView {
        RecordView {
            fields: vec!["resident_id".into(), "name".into()],
            masks: masks.iter().map(|(f, r)| (f.to_string(), *r)).collect(),
            key: vec!["resident_id".into()],
        }
    }

    #[test]
    fn reads_shaped_alike_share_a_digest_and_no_others_do() {
        let named = view(&[("name", MaskRule::PersonalName)]);
        assert_eq!(
            view_digest("101001/000001", Some(&named)),
            view_digest("101001/000001", Some(&named.clone()))
        );
        let also_id = view(&[("name", MaskRule::PersonalName), ("resident_id", MaskRule::ResidentId)]);
        let kept = view(&[("name", MaskRule::Keep { first: 1, last: 0 })]);
        let digests = [
            view_digest("101001/000001", Some(&named)),
            view_digest("101001/000001", Some(&also_id)),
            view_digest("101001/000001", Some(&kept)),
            view_digest("101001/000001", None),
            view_digest("101001/000002", Some(&named)),
        ];
        for (i, a) in digests.iter().enumerate() {
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn headers_travel_and_garbage_is_no_view() {
        let mut metadata = MetadataMap::new();
        set_headers(&mut metadata, "abc", Some(7));
        assert_eq!(headers_of(&metadata), (Some("abc".into()), Some(7)));
        let mut garbage = MetadataMap::new();
        garbage.insert(AFTER, "seven".parse().expect("ascii"));
        assert_eq!(headers_of(&garbage), (None, None));
    }
}
