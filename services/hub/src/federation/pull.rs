//! 目录汇聚 as the parent does it: for each registered child, a loop that asks the child for the
//! catalogue changes after the cursor kept here, waits at the child for the next change (so a
//! change arrives as it happens, and at the latest after `[federation] wait_secs`), checks what
//! came and applies it with the new cursor in one transaction. A parent that was down asks from
//! its cursor again: nothing is lost, nothing applied twice. Each pull is in the audit trail.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use xinqiao_domain::audit::AuditEvent;
use xinqiao_domain::catalogue::CatalogEntry;
use xinqiao_domain::federation::{self, CatalogueChange, FederatedEntry, PeerHub, Relation};
use xinqiao_domain::{Error, Result, text};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::federation_service_client::FederationServiceClient;
use xinqiao_store::Store;

use crate::audit::AuditLog;
use crate::convert;
use crate::federation::trust;

/// Changes asked for per call.
const PAGE: u32 = 500;
/// How often the list of children is read again when nothing wakes the puller.
const RECONCILE: Duration = Duration::from_secs(5);
/// The least time between two calls to a child that had nothing more.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest pause after failed pulls.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// This hub as a parent: pulls from every registered child. Cheap to clone.
#[derive(Clone)]
pub struct Puller {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    audit: AuditLog,
    division: String,
    cert: PathBuf,
    key: PathBuf,
    wait: Duration,
    retry: Duration,
    wake: Notify,
}

impl Puller {
    pub fn new(
        store: Arc<dyn Store>,
        audit: AuditLog,
        division: String,
        identity: crate::pki::CertFiles,
        wait: Duration,
        retry: Duration,
    ) -> Puller {
        Puller {
            inner: Arc::new(Inner {
                store,
                audit,
                division,
                cert: identity.cert,
                key: identity.key,
                wait,
                retry,
                wake: Notify::new(),
            }),
        }
    }

    /// The registry changed: read the children again now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Pulls from a child now, without waiting at it, until it has nothing more: what was
    /// applied and the cursor now.
    pub async fn sync(&self, child: &str) -> Result<(u64, u64)> {
        let mut applied = 0;
        let mut conflicts = 0;
        loop {
            let peer = self.current(child).await?;
            match self.pull_once(&peer, Duration::ZERO).await {
                Ok(outcome) => {
                    applied += outcome.applied;
                    if !outcome.more {
                        return Ok((applied, outcome.cursor));
                    }
                }
                // The running loop applied the same page first: read the cursor again.
                Err(Error::Aborted(_)) if conflicts < 5 => conflicts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    async fn current(&self, child: &str) -> Result<PeerHub> {
        self.inner
            .store
            .get_peer(child)
            .await?
            .filter(|p| p.relation == Relation::Child)
            .ok_or_else(|| Error::NotFound(format!("child hub {child}")))
    }

    /// Runs a pull loop per registered child until the hub stops.
    pub fn start(&self, stopping: watch::Receiver<bool>) -> JoinHandle<()> {
        let puller = self.clone();
        tokio::spawn(async move { puller.supervise(stopping).await })
    }

    async fn supervise(&self, mut stopping: watch::Receiver<bool>) {
        let mut loops: HashMap<String, (PeerHub, JoinHandle<()>)> = HashMap::new();
        loop {
            match self.inner.store.list_peers().await {
                Ok(peers) => {
                    let children: HashMap<String, PeerHub> = peers
                        .into_iter()
                        .filter(|p| p.relation == Relation::Child)
                        .map(|p| (p.division_code.clone(), p))
                        .collect();
                    loops.retain(|code, (seen, task)| {
                        let same = children
                            .get(code)
                            .is_some_and(|now| now.address == seen.address && now.ca_pem == seen.ca_pem);
                        if !same || task.is_finished() {
                            task.abort();
                        }
                        same && !task.is_finished()
                    });
                    for (code, peer) in children {
                        if let std::collections::hash_map::Entry::Vacant(vacant) = loops.entry(code) {
                            let task = tokio::spawn(self.clone().follow(vacant.key().clone(), stopping.clone()));
                            vacant.insert((peer, task));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the child hubs"),
            }
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(RECONCILE) => {}
                _ = stopping.changed() => break,
            }
        }
        for (_, (_, task)) in loops {
            task.abort();
        }
    }

    /// Follows one child until it is no longer registered as one or the hub stops.
    async fn follow(self, child: String, mut stopping: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            if *stopping.borrow() {
                return;
            }
            let peer = match self.current(&child).await {
                Ok(peer) => peer,
                Err(Error::NotFound(_)) => return,
                Err(e) => {
                    tracing::warn!(child = %child, error = %e, "cannot read the child hub");
                    if pause(self.inner.retry, &mut stopping).await {
                        return;
                    }
                    continue;
                }
            };
            let started = tokio::time::Instant::now();
            let pulled = tokio::select! {
                pulled = self.pull_once(&peer, self.inner.wait) => pulled,
                _ = stopping.changed() => return,
            };
            let rest = match pulled {
                Ok(pulled) => {
                    failures = 0;
                    if pulled.more || pulled.applied > 0 {
                        Duration::ZERO
                    } else {
                        // A child that answers at once with nothing (it does not wait) is asked
                        // again only after a moment: never a busy loop.
                        MIN_INTERVAL.saturating_sub(started.elapsed())
                    }
                }
                Err(Error::Aborted(_)) => Duration::ZERO,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(child = %child, error = %e, failures, "catalogue pull failed; retrying");
                    backoff(self.inner.retry, failures)
                }
            };
            if !rest.is_zero() && pause(rest, &mut stopping).await {
                return;
            }
        }
    }

    /// One call to the child and what came of it, recorded in the trail.
    async fn pull_once(&self, peer: &PeerHub, wait: Duration) -> Result<Pulled> {
        let result = self.pull(peer, wait).await;
        let outcome = match &result {
            Ok(_) => "OK",
            Err(e) => crate::audit::code_name(crate::status::to_status(e.clone()).code()),
        };
        let mut detail = serde_json::json!({ "after": peer.catalogue_cursor });
        match &result {
            Ok(pulled) => {
                detail["applied"] = pulled.applied.into();
                detail["position"] = pulled.cursor.into();
            }
            Err(e) => detail["message"] = text::shorten(&e.to_string(), 300).into(),
        }
        // Every call, also one that brought nothing: the child records it too.
        let event = AuditEvent {
            sequence: 0,
            at: crate::clock::now(),
            actor: format!("hub:{}", self.inner.division),
            action: "PullCatalogueChanges".into(),
            target: "catalogue".into(),
            about: format!("hub:{}", peer.division_code),
            outcome: outcome.into(),
            request_id: uuid::Uuid::now_v7().to_string(),
            detail: detail.to_string(),
        };
        if let Err(e) = self.inner.audit.record(event).await {
            tracing::error!(error = %e, "a catalogue pull could not be recorded in the audit trail");
        }
        result
    }

    async fn pull(&self, peer: &PeerHub, wait: Duration) -> Result<Pulled> {
        let code = &peer.division_code;
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| {
                Error::FailedPrecondition(format!("this hub's identity certificate {}: {e}", path.display()))
            })
        };
        let channel = trust::peer_channel(peer, &read(&self.inner.cert)?, &read(&self.inner.key)?)?;
        let mut client = FederationServiceClient::new(channel);
        let mut request = tonic::Request::new(pb::CatalogueChangesRequest {
            after: peer.catalogue_cursor,
            limit: PAGE,
            wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
        });
        request.set_timeout(wait + Duration::from_secs(10));
        let response = client
            .catalogue_changes(request)
            .await
            .map_err(|status| {
                let why = format!(
                    "peer hub {code} answered {:?}: {}",
                    status.code(),
                    text::shorten(status.message(), 200)
                );
                match status.code() {
                    tonic::Code::DeadlineExceeded => Error::DeadlineExceeded(why),
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => Error::PermissionDenied(why),
                    _ => Error::Unavailable(why),
                }
            })?
            .into_inner();
        let changes = self.check(peer, response.changes, response.position)?;
        let applied = self
            .inner
            .store
            .apply_catalogue_changes(code, peer.catalogue_cursor, &changes, response.position)
            .await?;
        Ok(Pulled {
            applied,
            cursor: response.position,
            more: response.more,
        })
    }

    /// What a child sent, checked: positions rising past the cursor up to the new one, each
    /// entry well-formed and from within the child's division.
    fn check(&self, peer: &PeerHub, changes: Vec<pb::CatalogueChange>, position: u64) -> Result<Vec<CatalogueChange>> {
        let bad = |why: String| {
            Err(Error::FailedPrecondition(format!(
                "peer hub {} sent a bad catalogue page: {why}",
                peer.division_code
            )))
        };
        if position < peer.catalogue_cursor {
            return bad(format!(
                "position {position} is before the cursor {}",
                peer.catalogue_cursor
            ));
        }
        let mut last = peer.catalogue_cursor;
        let mut checked = Vec::with_capacity(changes.len());
        for change in changes {
            if change.position <= last || change.position > position {
                return bad(format!("position {} out of order", change.position));
            }
            last = change.position;
            let Some(entry) = change.entry else {
                return bad(format!("no entry at position {}", change.position));
            };
            let entry = match entry_from_api(entry) {
                Ok(entry) => entry,
                Err(e) => return bad(format!("the entry at position {}: {e}", change.position)),
            };
            let change = CatalogueChange {
                position: change.position,
                entry: FederatedEntry {
                    origin_hub: change.origin_hub,
                    via_hub: peer.division_code.clone(),
                    entry,
                },
            };
            federation::accept_from_child(&self.inner.division, peer, &change)?;
            checked.push(change);
        }
        Ok(checked)
    }
}

/// What one pull did.
struct Pulled {
    applied: u64,
    cursor: u64,
    more: bool,
}

/// The pause after `failures` failed pulls in a row: `retry`, doubling, at most a minute.
fn backoff(retry: Duration, failures: u32) -> Duration {
    retry
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
        .min(MAX_BACKOFF)
}

/// Waits `period` unless the hub stops first (then true).
async fn pause(period: Duration, stopping: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(period) => false,
        _ = stopping.changed() => true,
    }
}

/// An entry as a child sent it, with its content validated as this hub validates its own.
fn entry_from_api(e: pb::CatalogEntry) -> Result<CatalogEntry> {
    let mut v = xinqiao_domain::error::Violations::new();
    v.check("provider_code", text::check(&e.provider_code, true, 18, false));
    v.check("provider_name", text::check(&e.provider_name, false, 100, false));
    v.check("state_reason", text::check(&e.state_reason, false, 500, true));
    v.into_result()?;
    let content = convert::draft(e.content.unwrap_or_default()).validate()?;
    let state = convert::entry_state(e.state).ok_or_else(|| Error::invalid("state", "unknown"))?;
    let created_at =
        convert::time("created_at", e.created_at)?.ok_or_else(|| Error::invalid("created_at", "missing"))?;
    let updated_at =
        convert::time("updated_at", e.updated_at)?.ok_or_else(|| Error::invalid("updated_at", "missing"))?;
    Ok(CatalogEntry {
        resource_code: e.resource_code,
        provider_code: e.provider_code,
        provider_name: e.provider_name,
        content,
        state,
        version: e.version,
        state_reason: e.state_reason,
        published_at: convert::time("published_at", e.published_at)?,
        created_at,
        updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_pulls_back_off_to_a_minute() {
        let retry = Duration::from_secs(5);
        assert_eq!(backoff(retry, 1), retry);
        assert_eq!(backoff(retry, 2), Duration::from_secs(10));
        assert_eq!(backoff(retry, 4), Duration::from_secs(40));
        assert_eq!(backoff(retry, 5), MAX_BACKOFF);
        assert_eq!(backoff(retry, u32::MAX), MAX_BACKOFF);
    }
}
