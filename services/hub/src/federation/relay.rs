//! Cross-hub exchange (跨级交换): a department reads a dataset held on another hub through its
//! own hub, by the same RPCs as a local read. Its hub finds the dataset among the entries
//! aggregated from its children and relays the call to the child it came through, over mutual
//! TLS as itself, naming the department and the hub it belongs to in the call's metadata. The
//! child relays further the same way until the hub holding the dataset decides the read under
//! its own rules and grants (see `Authenticator::reader`), shapes the records and audits it;
//! every hub on the way audits its side.
//!
//! Every relayed call ends within `CALL_TIMEOUT` (a unary call, or the opening of a stream) with
//! the peer named: DEADLINE_EXCEEDED when it is slow, UNAVAILABLE when it is down or answers
//! what is no gRPC answer; the peer's own refusals (PERMISSION_DENIED, NOT_FOUND, …) pass
//! through with its name in front.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Status};
use xinqiao_domain::catalogue::CatalogEntry;
use xinqiao_domain::federation::{self, PeerHub, Relation};
use xinqiao_domain::identity::Caller;
use xinqiao_domain::{Error, Result, text};
use xinqiao_proto::v1::access_service_client::AccessServiceClient;
use xinqiao_proto::v1::exchange_service_client::ExchangeServiceClient;
use xinqiao_proto::v1::interface_service_client::InterfaceServiceClient;
use xinqiao_store::Store;

use super::fanout::Fanout;
use super::trust;
use crate::auth::Relayed;
use crate::pki::CertFiles;

/// The metadata naming the department a peer hub relays a call for.
pub const FOR_DEPARTMENT: &str = "x-xinqiao-for-department";
/// The metadata naming the hub that department belongs to.
pub const HOME_HUB: &str = "x-xinqiao-home-hub";
/// How long a relayed call (or the opening of a relayed stream) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a read of a dataset held on another hub goes.
#[derive(Debug, Clone)]
pub struct Route {
    /// The child the entry came through, which the call is relayed to.
    pub peer: PeerHub,
    /// The hub that holds the dataset.
    pub origin_hub: String,
    /// The entry as aggregated here.
    pub entry: CatalogEntry,
    /// The dataset's name as the peer knows it: the resource code at its origin, or
    /// `<origin>:<code>` for a hub in between.
    pub dataset: String,
}

impl Route {
    /// An id made on the origin hub (a grant's, say) as the peer knows it.
    pub fn name(&self, id: &str) -> String {
        name_for(&self.peer, &self.origin_hub, id)
    }
}

/// Where a call about something held on another hub goes: a request, grant or error report
/// named `<origin hub>:<id>`, or a list of a department's own there.
#[derive(Debug, Clone)]
pub struct HubRoute {
    /// The child through which the origin hub is reached.
    pub peer: PeerHub,
    /// The hub that holds it.
    pub origin_hub: String,
}

impl HubRoute {
    /// An id made on the origin hub as the peer knows it.
    pub fn name(&self, id: &str) -> String {
        name_for(&self.peer, &self.origin_hub, id)
    }

    /// The hub to name in a relayed list: none when the peer holds it itself.
    pub fn hub(&self) -> String {
        if self.peer.division_code == self.origin_hub {
            String::new()
        } else {
            self.origin_hub.clone()
        }
    }
}

/// An id as `peer` knows it: its own without the prefix, another hub's as `<origin>:<id>`.
fn name_for(peer: &PeerHub, origin: &str, id: &str) -> String {
    let (named, local) = federation::split_origin(id);
    if peer.division_code == origin {
        match named {
            Some(o) if o == origin => local.to_string(),
            _ => id.to_string(),
        }
    } else {
        qualify(origin, id)
    }
}

/// An id made on hub `origin` as the hubs above it name it: `<origin>:<id>` (as a dataset held
/// there is named), so that the department that got it can follow it up through its own hub.
/// An id already naming its hub (relayed from further down) stays as it is.
pub fn qualify(origin: &str, id: &str) -> String {
    if id.is_empty() || federation::split_origin(id).0.is_some() {
        id.to_string()
    } else {
        format!("{origin}:{id}")
    }
}

/// A channel to a peer: the address and CA it was made for, and the channel.
type PeerChannel = (String, String, Channel);

/// The relaying side, one per hub with a federation identity.
#[derive(Clone)]
pub struct Relay {
    store: Arc<dyn Store>,
    /// Catalogue entries as the directory caches them: most reads are of this hub's own
    /// datasets, and asking whether the code is held here must not cost them a database read.
    entries: Arc<crate::directory::EntryCache>,
    division: String,
    identity: CertFiles,
    /// Channels to peers, by division code, with the address and CA they were made for.
    channels: Arc<Mutex<HashMap<String, PeerChannel>>>,
    /// Relayed subscriptions sharing one upstream per peer, dataset and view.
    fanout: Arc<Fanout>,
}

impl Relay {
    pub fn new(
        store: Arc<dyn Store>,
        entries: Arc<crate::directory::EntryCache>,
        division: String,
        identity: CertFiles,
    ) -> Relay {
        Relay {
            store,
            entries,
            division,
            identity,
            channels: Arc::new(Mutex::new(HashMap::new())),
            fanout: Arc::default(),
        }
    }

    pub fn fanout(&self) -> Arc<Fanout> {
        self.fanout.clone()
    }

    /// Where a read of `dataset` is relayed: `None` when this hub holds an entry of that code
    /// (the local gate decides) or no child offers one.
    pub async fn route(&self, dataset: &str) -> Result<Option<Route>> {
        let (origin, code) = federation::split_origin(dataset);
        if origin == Some(self.division.as_str()) {
            return Ok(None);
        }
        if origin.is_none() && self.held_here(code).await? {
            return Ok(None);
        }
        let entries = self.store.federated_entries(code).await?;
        let Some(target) = federation::relay_target(&entries, origin, code)? else {
            return Ok(None);
        };
        let peer = self.store.get_peer(&target.via_hub).await?.ok_or_else(|| {
            Error::Unavailable(format!(
                "hub {}, through which {code} came, is no longer registered here",
                target.via_hub
            ))
        })?;
        let dataset = if target.via_hub == target.origin_hub {
            code.to_string()
        } else {
            format!("{}:{code}", target.origin_hub)
        };
        Ok(Some(Route {
            peer,
            origin_hub: target.origin_hub.clone(),
            entry: target.entry.clone(),
            dataset,
        }))
    }

    /// This hub's division code.
    pub fn division(&self) -> &str {
        &self.division
    }

    /// Where a call about what hub `hub` holds goes: `None` for this hub (or none named). The
    /// hub must lie below this one, within the division of a registered child (the tree the
    /// peers vouch for, see `federation::acts_for`).
    pub async fn route_hub(&self, hub: &str) -> Result<Option<HubRoute>> {
        if hub.is_empty() || hub == self.division {
            return Ok(None);
        }
        federation::validate_division_code(hub).map_err(|e| Error::invalid("hub", e))?;
        let peers = self.store.list_peers().await?;
        let children = || peers.iter().filter(|p| p.relation == Relation::Child);
        let through = children()
            .find(|p| p.division_code == hub)
            .or_else(|| children().find(|p| federation::division_contains(&p.division_code, hub)))
            .ok_or_else(|| Error::NotFound(format!("hub {hub}: no child hub of this one reaches it")))?;
        Ok(Some(HubRoute {
            peer: through.clone(),
            origin_hub: hub.to_string(),
        }))
    }

    /// Where a call about `id` goes when it names another hub (`<hub>:<id>`), with the id as
    /// the peer knows it; `None` for an id of this hub's own.
    pub async fn route_id(&self, id: &str) -> Result<Option<(HubRoute, String)>> {
        let Some(origin) = federation::split_origin(id).0 else {
            return Ok(None);
        };
        let Some(route) = self.route_hub(origin).await? else {
            return Ok(None);
        };
        let name = route.name(id);
        Ok(Some((route, name)))
    }

    /// Whether this hub has an entry of `code` (from the directory's cache when fresh).
    async fn held_here(&self, code: &str) -> Result<bool> {
        if self.entries.get_shared(code).is_some() {
            return Ok(true);
        }
        let since = self.entries.mark();
        match self.store.get_entry(code).await? {
            Some(entry) => {
                let cached = crate::directory::CachedEntry::new(entry);
                self.entries.put(since, code.to_string(), cached);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn channel(&self, peer: &PeerHub) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((address, ca, channel)) = channels.get(&peer.division_code)
            && *address == peer.address
            && *ca == peer.ca_pem
        {
            return Ok(channel.clone());
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| {
                Error::FailedPrecondition(format!("this hub's identity certificate {}: {e}", path.display()))
            })
        };
        let channel = trust::peer_channel(peer, &read(&self.identity.cert)?, &read(&self.identity.key)?)?;
        channels.insert(
            peer.division_code.clone(),
            (peer.address.clone(), peer.ca_pem.clone(), channel.clone()),
        );
        Ok(channel)
    }

    pub fn exchange(&self, route: &Route) -> Result<ExchangeServiceClient<Channel>> {
        Ok(ExchangeServiceClient::new(self.channel(&route.peer)?).max_decoding_message_size(8 * 1024 * 1024))
    }

    pub fn access(&self, route: &Route) -> Result<AccessServiceClient<Channel>> {
        self.access_at(&route.peer)
    }

    pub fn access_at(&self, peer: &PeerHub) -> Result<AccessServiceClient<Channel>> {
        Ok(AccessServiceClient::new(self.channel(peer)?))
    }

    pub fn interface_at(&self, peer: &PeerHub) -> Result<InterfaceServiceClient<Channel>> {
        Ok(InterfaceServiceClient::new(self.channel(peer)?).max_decoding_message_size(8 * 1024 * 1024))
    }

    /// The relayed call: the department and its hub named, a deadline set.
    pub fn request<T>(
        &self,
        caller: &Caller,
        relayed: Option<&Relayed>,
        message: T,
        deadline: bool,
    ) -> Result<tonic::Request<T>> {
        let department = caller
            .department()
            .ok_or_else(|| Error::PermissionDenied("only a department's read is relayed to another hub".into()))?;
        let home = relayed.map_or(self.division.as_str(), |r| r.home_hub.as_str());
        let mut request = tonic::Request::new(message);
        let value = |v: &str| {
            v.parse()
                .map_err(|_| Error::invalid("department", "cannot be named in a relayed call"))
        };
        request.metadata_mut().insert(FOR_DEPARTMENT, value(department)?);
        request.metadata_mut().insert(HOME_HUB, value(home)?);
        if deadline {
            request.set_timeout(CALL_TIMEOUT);
        }
        Ok(request)
    }
}

/// A relayed call's answer within `CALL_TIMEOUT`, its failures told with the peer named.
pub async fn answered<T>(
    peer: &str,
    call: impl Future<Output = std::result::Result<tonic::Response<T>, Status>>,
) -> Result<T> {
    Ok(answered_within(CALL_TIMEOUT, peer, call).await?.into_inner())
}

/// As [`answered`], with the answer's headers.
pub async fn answered_response<T>(
    peer: &str,
    call: impl Future<Output = std::result::Result<tonic::Response<T>, Status>>,
) -> Result<tonic::Response<T>> {
    answered_within(CALL_TIMEOUT, peer, call).await
}

async fn answered_within<T>(
    limit: Duration,
    peer: &str,
    call: impl Future<Output = std::result::Result<tonic::Response<T>, Status>>,
) -> Result<tonic::Response<T>> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(status)) => Err(peer_error(peer, &status)),
        Err(_) => Err(Error::DeadlineExceeded(format!(
            "peer hub {peer} did not answer within {} ms",
            limit.as_millis()
        ))),
    }
}

/// A peer's failure as this hub tells its caller: the peer's refusals as they are, with its name
/// in front; anything that is no answer (down, cut off, garbage, an internal error there) as
/// UNAVAILABLE naming it, so that the caller retries later.
pub fn peer_error(peer: &str, status: &Status) -> Error {
    let why = format!("peer hub {peer}: {}", text::shorten(status.message(), 300));
    match status.code() {
        Code::PermissionDenied => Error::PermissionDenied(why),
        // Its message already ends in "not found", which this hub's own would add again.
        Code::NotFound => Error::NotFound(why.strip_suffix(" not found").unwrap_or(&why).to_string()),
        Code::InvalidArgument | Code::OutOfRange => Error::invalid("request", why),
        Code::FailedPrecondition => Error::FailedPrecondition(why),
        Code::AlreadyExists => Error::AlreadyExists(why),
        Code::ResourceExhausted => Error::ResourceExhausted(why),
        Code::Aborted => Error::Aborted(why),
        Code::DeadlineExceeded | Code::Cancelled => Error::DeadlineExceeded(why),
        // This hub's identity refused there: the peer registry is at odds, not the caller.
        Code::Unauthenticated => Error::Unavailable(format!("{why} (this hub's identity was refused)")),
        _ => Error::Unavailable(format!("{why} (resume from your last sequence once it is back)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_failures_name_it_and_never_look_like_the_callers() {
        let down = peer_error("330100", &Status::unknown("transport error"));
        assert!(matches!(&down, Error::Unavailable(m) if m.contains("330100")));
        let garbage = peer_error("330100", &Status::internal("protocol error: invalid frame"));
        assert!(matches!(garbage, Error::Unavailable(_)));
        let refused = peer_error("330110", &Status::permission_denied("grant revoked"));
        assert!(matches!(&refused, Error::PermissionDenied(m) if m.contains("330110") && m.contains("revoked")));
        let gone = peer_error("330100", &Status::not_found("peer hub 330110: grant 01 not found"));
        assert_eq!(gone.to_string(), "peer hub 330100: peer hub 330110: grant 01 not found");
        let slow = peer_error("330110", &Status::deadline_exceeded("late"));
        assert!(matches!(slow, Error::DeadlineExceeded(_)));
        let identity = peer_error("330110", &Status::unauthenticated("who"));
        assert!(matches!(identity, Error::Unavailable(_)));
    }

    #[test]
    fn ids_name_their_hub_above_it_and_lose_the_name_at_the_peer_holding_them() {
        assert_eq!(qualify("330110", "0190-ab"), "330110:0190-ab");
        assert_eq!(qualify("330100", "330110:0190-ab"), "330110:0190-ab");
        assert_eq!(qualify("330110", ""), "");
        let peer = |code: &str| PeerHub {
            division_code: code.into(),
            name: String::new(),
            address: String::new(),
            ca_pem: String::new(),
            relation: Relation::Child,
            exposure: federation::Exposure::default(),
            catalogue_cursor: 0,
            added_by: String::new(),
            added_at: chrono::DateTime::UNIX_EPOCH,
        };
        assert_eq!(name_for(&peer("330110"), "330110", "330110:0190-ab"), "0190-ab");
        assert_eq!(name_for(&peer("330110"), "330110", "0190-ab"), "0190-ab");
        assert_eq!(name_for(&peer("330100"), "330110", "330110:0190-ab"), "330110:0190-ab");
        assert_eq!(name_for(&peer("330100"), "330110", "0190-ab"), "330110:0190-ab");
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_is_a_deadline_naming_it() {
        let never = std::future::pending::<std::result::Result<tonic::Response<()>, Status>>();
        let limit = Duration::from_millis(50);
        let Err(Error::DeadlineExceeded(why)) = answered_within(limit, "330100", never).await else {
            panic!("deadline")
        };
        assert!(why.contains("330100"), "{why}");
    }
}
