//! AuditService: reading and verifying the audit trail, and keeping it to its retention period.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::{Request, Response, Status};
use xinqiao_domain::audit::{self, ChainedEvent, Keyring};
use xinqiao_domain::identity::Caller;
use xinqiao_domain::{Error, Result, paging, text};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::audit_service_server::AuditService;
use xinqiao_store::{AuditFilter, Store};

use crate::audit::CallNote;
use crate::auth::Authenticator;
use crate::convert::{self, timestamp};
use crate::paging::{decode, encode};
use crate::status::answer;
use crate::tls;

const EVENTS: &str = "audit";
/// Rows read per step when the whole chain is verified.
const VERIFY_PAGE: u32 = 1000;
/// How often the hub prunes events older than the retention period.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct AuditApi {
    store: Arc<dyn Store>,
    auth: Authenticator,
    keys: Keyring,
    tls: AnchorFiles,
}

fn event_api(row: ChainedEvent) -> pb::AuditEvent {
    let e = row.event;
    pb::AuditEvent {
        sequence: e.sequence,
        at: Some(timestamp(e.at)),
        actor: e.actor,
        action: e.action,
        target: e.target,
        about: e.about,
        outcome: e.outcome,
        request_id: e.request_id,
        detail: e.detail,
        hash: row.hash,
        algorithm: audit::algorithm_text(row.algorithm, row.key_id.as_deref()),
    }
}

fn optional(field: &str, value: &str) -> Result<Option<String>> {
    text::check(value, false, 200, false).map_err(|e| Error::invalid(field, e))?;
    Ok((!value.is_empty()).then(|| value.to_string()))
}

/// Where the hub's certificate, key and CA bundle are: anchors are signed with the key and
/// checked against the CA, read when needed so that rotated files are used at once.
#[derive(Debug, Clone)]
pub struct AnchorFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl AuditApi {
    pub fn new(store: Arc<dyn Store>, auth: Authenticator, keys: Keyring, tls: AnchorFiles) -> Self {
        Self { auth, store, keys, tls }
    }

    /// The anchor a caller gave, once its signature is found to be a hub's of this platform; the
    /// reason it is not, otherwise. A malformed anchor is the caller's mistake.
    fn signed_anchor(&self, given: pb::ChainAnchor) -> Result<std::result::Result<audit::Anchor, String>> {
        let at = convert::time("anchor.at", given.at)?.ok_or_else(|| Error::invalid("anchor.at", "is required"))?;
        let anchor = audit::Anchor {
            sequence: given.sequence,
            hash: given.hash,
            at,
        };
        let signed = tls::Signed {
            certificate: given.hub_certificate,
            scheme: given.signature_scheme,
            signature: given.signature,
        };
        Ok(tls::verify_hub_signature(&self.tls.ca, &anchor.signed_bytes(), &signed).map(|()| anchor))
    }
}

/// Walks the stored chain from its checkpoint, a page at a time, to its head or its first broken
/// link, checking keyed links with `keys` (and that every link past `unkeyed_until` is keyed).
/// With an anchor, also says whether the anchored event still has the anchored hash. Used by
/// VerifyChain and AnchorChain, and by the operations commands (`backup`, `restore`).
pub async fn verify_chain(
    store: &dyn Store,
    keys: &Keyring,
    anchor: Option<&audit::Anchor>,
) -> Result<pb::VerifyChainResponse> {
    let checkpoint = store.audit_checkpoint().await?;
    let mut answer = pb::VerifyChainResponse {
        intact: true,
        checkpoint_sequence: checkpoint.sequence,
        checkpoint_hash: checkpoint.hash.clone(),
        head_sequence: checkpoint.sequence,
        head_hash: checkpoint.hash.clone(),
        ..Default::default()
    };
    // The stored hash at the anchored event, once the walk passes it.
    let mut anchored = anchor
        .filter(|a| a.sequence == checkpoint.sequence)
        .map(|_| checkpoint.hash.clone());
    let everything = AuditFilter::default();
    let mut after = checkpoint.sequence;
    loop {
        let page = store.list_audit(&everything, after, VERIFY_PAGE).await?;
        let Some(last) = page.last() else { break };
        let (last_sequence, last_hash) = (last.event.sequence, last.hash.clone());
        let full = page.len() == VERIFY_PAGE as usize;
        if let Some(a) = anchor
            && let Some(row) = page.iter().find(|r| r.event.sequence == a.sequence)
        {
            anchored = Some(row.hash.clone());
        }
        let keyed: Vec<bool> = page.iter().map(|r| r.key_id.is_some()).collect();
        let (verified, broken) = match audit::verify_keyed(&answer.head_hash, answer.head_sequence + 1, page, keys) {
            Ok(n) => (n, None),
            Err(broken) => (broken.verified, Some(broken)),
        };
        let keyed_verified = keyed.iter().take(verified as usize).filter(|k| **k).count() as u64;
        answer.verified += verified;
        answer.keyed += keyed_verified;
        answer.unkeyed += verified - keyed_verified;
        if let Some(broken) = broken {
            answer.intact = false;
            answer.broken_sequence = broken.sequence;
            answer.broken_reason = broken.reason;
            break;
        }
        answer.head_sequence = last_sequence;
        answer.head_hash = last_hash;
        after = last_sequence;
        if !full {
            break;
        }
    }
    if let Some(anchor) = anchor {
        match anchor_holds(anchor, &answer, anchored.as_deref()) {
            Ok(()) => answer.anchor_holds = true,
            Err(reason) => answer.anchor_reason = reason,
        }
    }
    Ok(answer)
}

/// Whether the stored chain still is what the anchor vouched for: the anchored event is there,
/// with the anchored hash, and the chain verifies up to it.
fn anchor_holds(
    anchor: &audit::Anchor,
    walk: &pb::VerifyChainResponse,
    stored: Option<&str>,
) -> std::result::Result<(), String> {
    if anchor.sequence < walk.checkpoint_sequence {
        return Err(format!(
            "the anchored event {} was pruned (the trail now starts after {}); this anchor can no longer be checked",
            anchor.sequence, walk.checkpoint_sequence
        ));
    }
    if !walk.intact && walk.broken_sequence <= anchor.sequence {
        return Err(format!(
            "the chain is broken at event {}, at or before the anchored event {}",
            walk.broken_sequence, anchor.sequence
        ));
    }
    match stored {
        None => Err(format!(
            "the chain ends at event {}, before the anchored event {}: events were removed from its end",
            walk.head_sequence, anchor.sequence
        )),
        Some(hash) if hash != anchor.hash => Err(format!(
            "event {} no longer has the anchored hash: the chain was rewritten up to it",
            anchor.sequence
        )),
        Some(_) => Ok(()),
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.into_inner();
            let limit = paging::page_size(r.page_size)?;
            let after = match decode(EVENTS, &r.page_token)? {
                None => 0,
                Some(last) => last
                    .parse()
                    .map_err(|_| Error::invalid("page_token", "is not a token this listing returned"))?,
            };
            // The admin reads the whole trail; a department the events it did or that concern it.
            let involving = match &caller {
                Caller::Admin(_) => None,
                Caller::Department(code) => Some(code.clone()),
                Caller::Evaluator(_) => {
                    return Err(Error::PermissionDenied("an evaluator reads the scorecard only".into()));
                }
            };
            let filter = AuditFilter {
                actor: optional("actor", &r.actor)?,
                target: optional("target", &r.target)?,
                action: optional("action", &r.action)?,
                from: convert::time("from", r.from)?,
                to: convert::time("to", r.to)?,
                involving,
            };
            note.about(
                filter.target.as_deref().unwrap_or_default(),
                caller.department().unwrap_or_default(),
            );
            let mut page = self.store.list_audit(&filter, after, limit + 1).await?;
            // Events are keyed by their sequence number, which the token carries as text.
            let next_page_token = if page.len() > limit as usize {
                page.truncate(limit as usize);
                page.last()
                    .map(|row| encode(EVENTS, &row.event.sequence.to_string()))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            note.detail("events", page.len());
            Ok(pb::ListEventsResponse {
                events: page.into_iter().map(event_api).collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn verify_chain(
        &self,
        request: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            if !caller.is_admin() {
                return Err(Error::PermissionDenied(
                    "only the platform admin verifies the whole audit trail".into(),
                ));
            }
            let anchor = match request.into_inner().anchor {
                None => None,
                Some(given) => Some(self.signed_anchor(given)?),
            };
            let mut answer = verify_chain(
                self.store.as_ref(),
                &self.keys,
                anchor.as_ref().and_then(|a| a.as_ref().ok()),
            )
            .await?;
            if let Some(Err(reason)) = &anchor {
                answer.anchor_reason.clone_from(reason);
            }
            note.detail("intact", answer.intact);
            note.detail("verified", answer.verified);
            if !answer.intact {
                note.detail("broken_sequence", answer.broken_sequence);
            }
            if anchor.is_some() {
                note.detail("anchor_holds", answer.anchor_holds);
            }
            Ok(answer)
        })
        .await
    }

    async fn anchor_chain(
        &self,
        request: Request<pb::AnchorChainRequest>,
    ) -> Result<Response<pb::ChainAnchor>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            if !caller.is_admin() {
                return Err(Error::PermissionDenied(
                    "only the platform admin anchors the audit trail".into(),
                ));
            }
            let walk = verify_chain(self.store.as_ref(), &self.keys, None).await?;
            if !walk.intact {
                return Err(Error::FailedPrecondition(format!(
                    "the chain is broken at event {} ({}); an anchor would vouch for it",
                    walk.broken_sequence, walk.broken_reason
                )));
            }
            let anchor = audit::Anchor {
                sequence: walk.head_sequence,
                hash: walk.head_hash,
                at: crate::clock::now(),
            };
            let signed =
                tls::sign_with_hub_key(&self.tls.cert, &self.tls.key, &anchor.signed_bytes()).map_err(|e| {
                    tracing::error!(error = %e, "cannot sign an audit anchor");
                    Error::Internal(format!("signing the anchor: {e}"))
                })?;
            note.detail("sequence", anchor.sequence);
            Ok(pb::ChainAnchor {
                sequence: anchor.sequence,
                hash: anchor.hash,
                at: Some(timestamp(anchor.at)),
                hub_certificate: signed.certificate,
                signature_scheme: signed.scheme,
                signature: signed.signature,
            })
        })
        .await
    }
}

/// Prunes events older than the retention period now and every hour, until the hub stops. The
/// store keeps a checkpoint, so the rest of the chain still verifies.
pub fn keep_retention(
    store: Arc<dyn Store>,
    log: crate::audit::AuditLog,
    retention_days: u32,
    mut stopping: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            let now = crate::clock::now();
            let before = now - chrono::Duration::days(i64::from(retention_days));
            match store.prune_audit(before, now).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(pruned = n, %before, "audit events past retention pruned");
                    let event = audit::AuditEvent {
                        sequence: 0,
                        at: now,
                        actor: "hub".into(),
                        action: "PruneAudit".into(),
                        target: String::new(),
                        about: String::new(),
                        outcome: "OK".into(),
                        request_id: uuid::Uuid::now_v7().to_string(),
                        detail: serde_json::json!({ "pruned": n, "before": before.to_rfc3339() }).to_string(),
                    };
                    let _ = log.record(event).await;
                }
                Err(e) => tracing::error!(error = %e, "pruning the audit trail failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
                _ = stopping.changed() => return,
            }
        }
    });
}
