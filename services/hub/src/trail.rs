//! AuditService: reading and verifying the audit trail, and keeping it to its retention period.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::{Request, Response, Status};
use xinqiao_domain::audit::{self, ChainedEvent};
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

const EVENTS: &str = "audit";
/// Rows read per step when the whole chain is verified.
const VERIFY_PAGE: u32 = 1000;
/// How often the hub prunes events older than the retention period.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub struct AuditApi {
    store: Arc<dyn Store>,
    auth: Authenticator,
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
        algorithm: row.algorithm.as_str().to_string(),
    }
}

fn optional(field: &str, value: &str) -> Result<Option<String>> {
    text::check(value, false, 200, false).map_err(|e| Error::invalid(field, e))?;
    Ok((!value.is_empty()).then(|| value.to_string()))
}

impl AuditApi {
    pub fn new(store: Arc<dyn Store>, auth: Authenticator) -> Self {
        Self { auth, store }
    }
}

/// Walks the stored chain from its checkpoint, a page at a time, to its head or its first broken
/// link. Used by VerifyChain and by the operations commands (`check`, `backup`, `restore`).
pub async fn verify_chain(store: &dyn Store) -> Result<pb::VerifyChainResponse> {
    let checkpoint = store.audit_checkpoint().await?;
    let mut answer = pb::VerifyChainResponse {
        intact: true,
        checkpoint_sequence: checkpoint.sequence,
        checkpoint_hash: checkpoint.hash.clone(),
        head_sequence: checkpoint.sequence,
        head_hash: checkpoint.hash.clone(),
        ..Default::default()
    };
    let everything = AuditFilter::default();
    let mut after = checkpoint.sequence;
    loop {
        let page = store.list_audit(&everything, after, VERIFY_PAGE).await?;
        let Some(last) = page.last() else { break };
        let (last_sequence, last_hash) = (last.event.sequence, last.hash.clone());
        let full = page.len() == VERIFY_PAGE as usize;
        match audit::verify(&answer.head_hash, answer.head_sequence + 1, page) {
            Ok(n) => answer.verified += n,
            Err(broken) => {
                answer.verified += broken.verified;
                answer.intact = false;
                answer.broken_sequence = broken.sequence;
                answer.broken_reason = broken.reason;
                return Ok(answer);
            }
        }
        answer.head_sequence = last_sequence;
        answer.head_hash = last_hash;
        after = last_sequence;
        if !full {
            break;
        }
    }
    Ok(answer)
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
            let answer = verify_chain(self.store.as_ref()).await?;
            note.detail("intact", answer.intact);
            note.detail("verified", answer.verified);
            if !answer.intact {
                note.detail("broken_sequence", answer.broken_sequence);
            }
            Ok(answer)
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
