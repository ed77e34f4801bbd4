//! Authentication: from the connection's verified certificate to a [`Caller`] whose department is
//! registered and active.

use std::sync::Arc;

use xinqiao_domain::federation::PeerHub;
use xinqiao_domain::identity::{Caller, Principal};
use xinqiao_domain::{Error, Result};
use xinqiao_store::Store;

use crate::cache::{Cache, FRESH_FOR};
use crate::tls::PeerInfo;

/// A read relayed by a peer hub for a department it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// The peer hub that called.
    pub peer: String,
    /// The hub the department belongs to (the peer itself, or one it relays for).
    pub home_hub: String,
}

/// One per hub, shared by every service, so that the directory's changes reach them all.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    /// Each department's state as last read: `Some(active)`, or `None` when not registered.
    departments: Arc<Cache<String, Option<bool>>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            departments: Arc::new(Cache::new(FRESH_FOR)),
        }
    }

    /// Called by the directory after it registers, changes, deactivates or reactivates a
    /// department, so that this hub's next call sees it.
    pub fn forget_department(&self, code: &str) {
        self.departments.forget(code);
    }

    async fn department_state(&self, code: &str) -> Result<Option<bool>> {
        if let Some(state) = self.departments.get(code) {
            return Ok(state);
        }
        let since = self.departments.mark();
        let state = self.store.get_department(code).await?.map(|d| d.active);
        self.departments.put(since, code.to_string(), state);
        Ok(state)
    }

    /// Who is calling: a department or the admin. An evaluator is refused here, so that every
    /// service but the scorecard is closed to it by default.
    pub async fn caller<T>(&self, request: &tonic::Request<T>) -> Result<Caller> {
        match self.anyone(request).await? {
            Caller::Evaluator(_) => Err(Error::PermissionDenied(
                "an evaluator (评价方) reads the sharing scorecard only".into(),
            )),
            caller => Ok(caller),
        }
    }

    /// Who is calling, evaluators included: for the scorecard and WhoAmI. The department is
    /// looked up on every call, so a deactivation takes effect at once, also on connections that
    /// are already open.
    pub async fn anyone<T>(&self, request: &tonic::Request<T>) -> Result<Caller> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .ok_or_else(|| Error::Unauthenticated("no verified client certificate on this connection".into()))?;
        match &peer.principal {
            None => Err(Error::Unauthenticated(
                "the client certificate names no xinqiao identity (SAN URI urn:xinqiao:dept:<USCC> or urn:xinqiao:admin:<name>)"
                    .into(),
            )),
            Some(Principal::Admin(name)) => Ok(Caller::Admin(name.clone())),
            Some(Principal::Evaluator(name)) => Ok(Caller::Evaluator(name.clone())),
            // 平台级联: a peer hub calls the federation service only (see `peer_hub`).
            Some(Principal::Hub(code)) => Err(Error::PermissionDenied(format!(
                "hub {code} is a peer hub: it calls the federation service only"
            ))),
            Some(Principal::Department(code)) => {
                let caller = Caller::Department(code.clone());
                self.still_active(&caller).await?;
                Ok(caller)
            }
        }
    }

    /// The peer hub calling, for the federation service: the certificate must name a hub
    /// (`urn:xinqiao:hub:<division code>`) registered here as a peer. What it may do there is
    /// the federation rules' to decide. Every other identity is refused.
    pub async fn peer_hub<T>(&self, request: &tonic::Request<T>) -> Result<PeerHub> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .ok_or_else(|| Error::Unauthenticated("no verified client certificate on this connection".into()))?;
        match &peer.principal {
            Some(Principal::Hub(code)) => {
                self.store.get_peer(code).await?.ok_or_else(|| {
                    Error::PermissionDenied(format!("hub {code} is not registered as a peer of this hub"))
                })
            }
            Some(_) => Err(Error::PermissionDenied(
                "only a peer hub (urn:xinqiao:hub:<division code>) calls this".into(),
            )),
            None => Err(Error::Unauthenticated(
                "the client certificate names no xinqiao identity".into(),
            )),
        }
    }

    /// Who reads: as [`Authenticator::caller`], or a department of another hub whose call a
    /// registered peer hub relays (跨级交换), naming the department and the hub it belongs to in
    /// the call's metadata. The peer is trusted for that department only as far as
    /// `federation::acts_for` allows; what the department may read is then decided by this hub's
    /// rules and grants as for a department of its own. The trail names both: the peer hub as
    /// the actor, the department in the detail.
    pub async fn reader<T>(&self, request: &tonic::Request<T>) -> Result<(Caller, Option<Relayed>)> {
        let hub = match request.extensions().get::<PeerInfo>().map(|p| &p.principal) {
            Some(Some(Principal::Hub(code))) => code.clone(),
            _ => return Ok((self.caller(request).await?, None)),
        };
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .map(|v| v.to_str().map(str::to_string).unwrap_or_default())
        };
        let (Some(department), Some(home_hub)) = (
            header(crate::federation::relay::FOR_DEPARTMENT),
            header(crate::federation::relay::HOME_HUB),
        ) else {
            return Err(Error::PermissionDenied(format!(
                "hub {hub} relays a department's read here only naming the department and its hub"
            )));
        };
        // Noted before it is checked, so that a refusal names whom the peer claimed to act for.
        let note = crate::audit::CallNote::of(request);
        note.detail("for_department", department.clone());
        note.detail("home_hub", home_hub.clone());
        let peer = self.peer_hub(request).await?;
        xinqiao_domain::federation::acts_for(&peer, &department, &home_hub)?;
        // A department of this hub calls with its own certificate: no peer speaks for it here
        // (a peer could otherwise borrow a local provider's standing).
        if self.department_state(&department).await?.is_some() {
            return Err(Error::PermissionDenied(format!(
                "hub {hub} cannot act for department {department}: it is registered with this hub and calls it itself"
            )));
        }
        Ok((Caller::Department(department), Some(Relayed { peer: hub, home_hub })))
    }

    /// Whether a relaying peer hub is still registered: a live read it relays ends when it is
    /// removed.
    pub async fn still_peer(&self, relayed: &Relayed) -> Result<()> {
        match self.store.get_peer(&relayed.peer).await? {
            Some(_) => Ok(()),
            None => Err(Error::PermissionDenied(format!(
                "hub {} is no longer registered as a peer of this hub",
                relayed.peer
            ))),
        }
    }

    /// Whether a caller's department is still registered and active: checked on every call, and
    /// by live streams now and then, so that a deactivation ends them too (see `cache` for how
    /// soon a change made on another hub node is seen).
    pub async fn still_active(&self, caller: &Caller) -> Result<()> {
        let Caller::Department(code) = caller else {
            return Ok(());
        };
        match self.department_state(code).await? {
            None => Err(Error::PermissionDenied(format!(
                "department {code} is not registered with this hub"
            ))),
            Some(false) => Err(Error::PermissionDenied(format!("department {code} is deactivated"))),
            Some(true) => Ok(()),
        }
    }
}
