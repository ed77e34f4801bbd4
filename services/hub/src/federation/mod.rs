//! Federation (平台级联): the FederationService — the admin's peer registry, and the catalogue
//! feed a registered parent reads — and the search of entries aggregated from children.
//!
//! A peer hub authenticates by its own certificate (`urn:xinqiao:hub:<division>`), possibly
//! under another platform's CA (see `trust`). Its calls pass the same audit layer as every other
//! call; the pulls this hub makes as a parent are recorded in the same trail (see `pull`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use xinqiao_domain::catalogue::{CatalogEntry, EntryFilter};
use xinqiao_domain::federation::{self, CatalogueChange, Exposure, PeerDraft, PeerHub, Relation};
use xinqiao_domain::identity::Caller;
use xinqiao_domain::policy::EntryVisibility;
use xinqiao_domain::search::{self, SearchPosition};
use xinqiao_domain::{Error, Result};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::federation_service_server::FederationService;
use xinqiao_store::Store;

use crate::audit::CallNote;
use crate::auth::Authenticator;
use crate::convert;
use crate::paging::{decode, encode};
use crate::status::answer;
use crate::tls::ServerTls;

pub mod fanout;
mod pull;
pub mod relay;
pub mod trust;

pub use pull::Puller;

/// The page-token listing of this hub's own entries: the directory's own (tokens it gave
/// before federation existed still work).
const ENTRIES: &str = "entries";
/// The page-token listing of aggregated entries (key: origin hub, space, resource code).
const AGGREGATED: &str = "aggregated-entries";

/// Changes a parent gets at most per call, and by default.
const MAX_CHANGES: u32 = 1000;
const DEFAULT_CHANGES: u32 = 200;
/// The longest a CatalogueChanges call waits for a change.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting call looks at the feed again (changes may be made on another hub node).
const WAIT_POLL: Duration = Duration::from_millis(200);

pub struct FederationApi {
    store: Arc<dyn Store>,
    auth: Authenticator,
    /// This hub's 行政区划代码, when federation is configured.
    division: Option<String>,
    /// The server's TLS configuration, which trusts the registered peers' CAs.
    tls: Option<ServerTls>,
    puller: Option<Puller>,
    stopping: watch::Receiver<bool>,
}

impl FederationApi {
    pub fn new(
        store: Arc<dyn Store>,
        auth: Authenticator,
        division: Option<String>,
        tls: Option<ServerTls>,
        puller: Option<Puller>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            auth,
            division,
            tls,
            puller,
            stopping,
        }
    }

    fn own_division(&self) -> Result<&str> {
        self.division.as_deref().ok_or_else(|| {
            Error::FailedPrecondition(
                "this hub takes no part in federation: [federation] division is not configured".into(),
            )
        })
    }

    async fn admin<T>(&self, request: &Request<T>) -> Result<Caller> {
        let denied = || Error::PermissionDenied("only the platform admin manages peer hubs".into());
        // A peer hub is told what this service's registry is, not that it may call this service.
        let peer_hub = request
            .extensions()
            .get::<crate::tls::PeerInfo>()
            .is_some_and(|p| matches!(p.principal, Some(xinqiao_domain::identity::Principal::Hub(_))));
        if peer_hub {
            return Err(denied());
        }
        let caller = self.auth.caller(request).await?;
        if !caller.is_admin() {
            return Err(denied());
        }
        Ok(caller)
    }

    /// Puts the registered peers' CAs in force and tells the puller the registry changed.
    async fn registry_changed(&self) -> Result<()> {
        refresh_trust(self.store.as_ref(), self.tls.as_ref()).await?;
        if let Some(puller) = &self.puller {
            puller.wake();
        }
        Ok(())
    }
}

/// Trusts the CAs of the peers registered now (each for its own hub's identity only).
pub async fn refresh_trust(store: &dyn Store, tls: Option<&ServerTls>) -> Result<()> {
    let Some(tls) = tls else { return Ok(()) };
    let peers = store.list_peers().await?;
    tls.trust_peers(trust::PeerTrust::of(&peers))
        .map_err(|e| Error::Internal(format!("TLS configuration with the peers' CAs: {e}")))
}

/// Keeps the peers' CAs in force as they change on other hub nodes over the same database.
pub fn keep_trust(store: Arc<dyn Store>, tls: ServerTls, mut stopping: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut seen = None;
        loop {
            match store.list_peers().await {
                Ok(peers) => {
                    let now: Vec<(String, String)> = peers
                        .iter()
                        .map(|p| (p.division_code.clone(), p.ca_pem.clone()))
                        .collect();
                    if seen.as_ref() != Some(&now) {
                        if let Err(e) = tls.trust_peers(trust::PeerTrust::of(&peers)) {
                            tracing::error!(error = %e, "the peer hubs' CAs are not in force");
                        }
                        seen = Some(now);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the peer hubs"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stopping.changed() => return,
            }
        }
    });
}

fn relation(value: i32) -> Option<Relation> {
    match pb::PeerRelation::try_from(value).ok()? {
        pb::PeerRelation::Parent => Some(Relation::Parent),
        pb::PeerRelation::Child => Some(Relation::Child),
        pb::PeerRelation::Peer => Some(Relation::Peer),
        pb::PeerRelation::Unspecified => None,
    }
}

fn relation_api(relation: Relation) -> i32 {
    match relation {
        Relation::Parent => pb::PeerRelation::Parent,
        Relation::Child => pb::PeerRelation::Child,
        Relation::Peer => pb::PeerRelation::Peer,
    }
    .into()
}

fn peer_api(p: PeerHub) -> pb::Peer {
    pb::Peer {
        division_code: p.division_code,
        name: p.name,
        address: p.address,
        ca_pem: p.ca_pem,
        relation: relation_api(p.relation),
        exposure: Some(pb::PeerExposure {
            catalogue: p.exposure.catalogue,
            classifications: p.exposure.classifications,
        }),
        catalogue_cursor: p.catalogue_cursor,
        added_by: p.added_by,
        added_at: Some(convert::timestamp(p.added_at)),
    }
}

fn check_division(code: &str) -> Result<()> {
    federation::validate_division_code(code).map_err(|e| Error::invalid("division_code", e))
}

async fn registered(store: &dyn Store, code: &str) -> Result<PeerHub> {
    check_division(code)?;
    store
        .get_peer(code)
        .await?
        .ok_or_else(|| Error::NotFound(format!("peer hub {code}")))
}

#[tonic::async_trait]
impl FederationService for FederationApi {
    async fn add_peer(&self, request: Request<pb::AddPeerRequest>) -> Result<Response<pb::Peer>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let r = request.get_ref().clone();
            note.about(&r.division_code, "");
            let caller = self.admin(&request).await?;
            let own = self.own_division()?;
            let exposure = r.exposure.unwrap_or_default();
            let draft = PeerDraft {
                division_code: r.division_code,
                name: r.name,
                address: r.address,
                ca_pem: r.ca_pem,
                relation: relation(r.relation),
                exposure: Exposure {
                    catalogue: exposure.catalogue,
                    classifications: exposure.classifications,
                },
            };
            let peer = draft.validate(own, &caller.actor(), crate::clock::now())?;
            trust::ca_certificates(&peer.ca_pem)?;
            let peer = self.store.add_peer(&peer).await?;
            note.detail("relation", peer.relation.as_str());
            self.registry_changed().await?;
            Ok(peer_api(peer))
        })
        .await
    }

    async fn get_peer(&self, request: Request<pb::GetPeerRequest>) -> Result<Response<pb::Peer>, Status> {
        answer(async {
            self.admin(&request).await?;
            Ok(peer_api(
                registered(self.store.as_ref(), &request.get_ref().division_code).await?,
            ))
        })
        .await
    }

    async fn list_peers(
        &self,
        request: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        answer(async {
            self.admin(&request).await?;
            let peers = self.store.list_peers().await?;
            Ok(pb::ListPeersResponse {
                peers: peers.into_iter().map(peer_api).collect(),
            })
        })
        .await
    }

    async fn remove_peer(
        &self,
        request: Request<pb::RemovePeerRequest>,
    ) -> Result<Response<pb::RemovePeerResponse>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let code = request.get_ref().division_code.clone();
            note.about(&code, "");
            self.admin(&request).await?;
            check_division(&code)?;
            let withdrawn = self.store.remove_peer(&code, crate::clock::now()).await?;
            note.detail("withdrawn_entries", withdrawn);
            self.registry_changed().await?;
            Ok(pb::RemovePeerResponse {
                withdrawn_entries: withdrawn,
            })
        })
        .await
    }

    async fn sync_peer(&self, request: Request<pb::SyncPeerRequest>) -> Result<Response<pb::SyncPeerResponse>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let code = request.get_ref().division_code.clone();
            note.about(&code, "");
            self.admin(&request).await?;
            self.own_division()?;
            let peer = registered(self.store.as_ref(), &code).await?;
            if peer.relation != Relation::Child {
                return Err(Error::FailedPrecondition(format!(
                    "hub {code} is registered as a {}: only a child's catalogue is pulled",
                    peer.relation
                )));
            }
            let puller = self
                .puller
                .as_ref()
                .ok_or_else(|| Error::FailedPrecondition("this hub pulls from no child".into()))?;
            let (applied, cursor) = puller.sync(&code).await?;
            note.detail("applied", applied);
            note.detail("catalogue_cursor", cursor);
            Ok(pb::SyncPeerResponse {
                applied,
                catalogue_cursor: cursor,
            })
        })
        .await
    }

    async fn catalogue_changes(
        &self,
        request: Request<pb::CatalogueChangesRequest>,
    ) -> Result<Response<pb::CatalogueChangesResponse>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let peer = self.auth.peer_hub(&request).await?;
            note.about("catalogue", &format!("hub:{}", peer.division_code));
            federation::read_catalogue_feed(&peer)?;
            let own = self.own_division()?.to_string();
            let r = request.get_ref();
            let limit = match r.limit {
                0 => DEFAULT_CHANGES,
                n if n > MAX_CHANGES => {
                    return Err(Error::invalid("limit", format!("is {n}; at most {MAX_CHANGES}")));
                }
                n => n,
            };
            let wait = Duration::from_millis(u64::from(r.wait_ms));
            if wait > MAX_WAIT {
                return Err(Error::invalid("wait_ms", "is more than 30000"));
            }
            let deadline = tokio::time::Instant::now() + wait;
            let mut stopping = self.stopping.clone();
            let (changes, head) = loop {
                let (changes, head) = self.store.catalogue_changes(r.after, limit).await?;
                if !changes.is_empty() || head > r.after || tokio::time::Instant::now() >= deadline {
                    break (changes, head);
                }
                tokio::select! {
                    _ = tokio::time::sleep(WAIT_POLL) => {}
                    _ = stopping.changed() => break (changes, head),
                }
            };
            let full = changes.len() == limit as usize;
            let position = match changes.last() {
                Some(last) if full => last.position,
                _ => head.max(r.after),
            };
            let offered: Vec<pb::CatalogueChange> = changes
                .into_iter()
                .filter(|c| peer.exposure.exposes_class(&c.entry.entry.content.classification))
                .map(|c| change_api(c, &own))
                .collect();
            note.detail("after", r.after);
            note.detail("changes", offered.len());
            note.detail("position", position);
            Ok(pb::CatalogueChangesResponse {
                changes: offered,
                position,
                more: position < head,
            })
        })
        .await
    }
}

/// A change of this hub's feed as a parent reads it: this hub's own entries named by its
/// division code.
fn change_api(c: CatalogueChange, own: &str) -> pb::CatalogueChange {
    let origin = if c.entry.origin_hub.is_empty() {
        own.to_string()
    } else {
        c.entry.origin_hub
    };
    pb::CatalogueChange {
        position: c.position,
        origin_hub: origin,
        entry: Some(convert::entry(c.entry.entry)),
    }
}

/// The directory's search: this hub's own entries first, then unless `local_only` the entries
/// aggregated from child hubs (目录汇聚), marked with their origin; each part in the store's
/// order (by relevance tier with a keyword, then by origin and code). The page token says which
/// part it continues and after which position. Each entry comes encoded as its API message
/// (`pb::SearchEntriesResponse::encoded`): this hub's own as the entry cache holds them.
pub async fn search_entries(
    search: &crate::search_index::CatalogueSearch,
    visibility: &EntryVisibility,
    filter: &EntryFilter,
    page_token: &str,
    limit: u32,
    local_only: bool,
) -> Result<(Vec<Bytes>, String)> {
    let keyword = search::matching_keyword(&filter.keyword);
    let position = |origin: &str, entry: &CatalogEntry| SearchPosition::of_entry(origin, entry, &keyword);
    let forged = || Error::invalid("page_token", "is not a token this listing returned");
    let parse = |key: Option<String>| {
        key.map(|k| SearchPosition::parse_key(&k).ok_or_else(forged))
            .transpose()
    };
    let aggregated_after = match decode(ENTRIES, page_token) {
        Ok(local_after) => {
            let local_after = parse(local_after)?;
            let mut page = search
                .own_entries(visibility, filter, local_after.as_ref(), limit + 1)
                .await?;
            if page.len() > limit as usize || local_only {
                let token = if page.len() > limit as usize {
                    page.truncate(limit as usize);
                    page.last()
                        .map(|e| encode(ENTRIES, &position("", &e.entry).key()))
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                return Ok((page.iter().map(|e| e.wire.clone()).collect(), token));
            }
            let last_local = page.last().map(|e| position("", &e.entry));
            let local: Vec<Bytes> = page.iter().map(|e| e.wire.clone()).collect();
            let room = limit - local.len() as u32;
            let (aggregated, more) = aggregated_page(search, visibility, filter, None, room).await?;
            let token = match (more, aggregated.last(), last_local) {
                (false, _, _) => String::new(),
                (true, Some(last), _) => encode(AGGREGATED, &position(&last.origin_hub, &last.entry).key()),
                // The page is full of this hub's own entries; the aggregated ones follow.
                (true, None, Some(last)) => encode(ENTRIES, &last.key()),
                (true, None, None) => String::new(),
            };
            let aggregated = aggregated.into_iter().map(federated_wire);
            return Ok((local.into_iter().chain(aggregated).collect(), token));
        }
        Err(e) => {
            let key = decode(AGGREGATED, page_token).map_err(|_| e.clone())?.ok_or(e)?;
            parse(Some(key))?.ok_or_else(forged)?
        }
    };
    if local_only {
        return Ok((Vec::new(), String::new()));
    }
    let (aggregated, more) = aggregated_page(search, visibility, filter, Some(&aggregated_after), limit).await?;
    let token = match aggregated.last() {
        Some(last) if more => encode(AGGREGATED, &position(&last.origin_hub, &last.entry).key()),
        _ => String::new(),
    };
    Ok((aggregated.into_iter().map(federated_wire).collect(), token))
}

/// An aggregated entry's API message, encoded.
fn federated_wire(entry: federation::FederatedEntry) -> Bytes {
    Bytes::from(prost::Message::encode_to_vec(&convert::federated_entry(entry)))
}

/// An entry aggregated from a child hub (目录汇聚), as GetEntry answers it: read-only, under the
/// search's visibility rule, named `<origin hub>:<code>` or by its code alone when one hub below
/// holds it. `None` when there is no such entry the caller may see.
pub async fn aggregated_entry(store: &dyn Store, caller: &Caller, name: &str) -> Result<Option<pb::CatalogEntry>> {
    let (origin, code) = federation::split_origin(name);
    let visibility = xinqiao_domain::policy::entry_visibility(caller);
    let entries = store.federated_entries(code).await?;
    let mut seen = entries.into_iter().filter(|e| {
        origin.is_none_or(|o| o == e.origin_hub) && visibility.allows(&e.entry.provider_code, e.entry.state)
    });
    let first = seen.next();
    if first.is_some() && seen.next().is_some() {
        return Err(Error::FailedPrecondition(format!(
            "several hubs hold {code}: name it as <origin hub>:{code}"
        )));
    }
    Ok(first.map(convert::federated_entry))
}

/// At most `room` aggregated entries after `after`, and whether more follow.
async fn aggregated_page(
    search: &crate::search_index::CatalogueSearch,
    visibility: &EntryVisibility,
    filter: &EntryFilter,
    after: Option<&SearchPosition>,
    room: u32,
) -> Result<(Vec<federation::FederatedEntry>, bool)> {
    let mut page = search.aggregated_entries(visibility, filter, after, room + 1).await?;
    let more = page.len() > room as usize;
    page.truncate(room as usize);
    Ok((page, more))
}

/// The federation service of a starting hub: the registered peers' CAs put in force (and kept
/// so as other nodes change them), and, when `[federation] division` is set, a pull loop per
/// registered child until the hub stops.
pub async fn start(
    config: &crate::Config,
    store: Arc<dyn Store>,
    auth: Authenticator,
    audit: crate::audit::AuditLog,
    tls: &ServerTls,
    stopping: watch::Receiver<bool>,
) -> Result<xinqiao_proto::v1::federation_service_server::FederationServiceServer<FederationApi>> {
    refresh_trust(store.as_ref(), Some(tls)).await?;
    keep_trust(store.clone(), tls.clone(), stopping.clone());
    let identity = config.hub_identity();
    if let Some((division, _)) = &identity {
        federation::validate_division_code(division).map_err(|e| Error::invalid("federation.division", e))?;
    }
    let puller = identity.map(|(division, files)| {
        let puller = Puller::new(
            store.clone(),
            audit,
            division,
            files,
            config.federation.wait(),
            config.federation.retry(),
        );
        puller.start(stopping.clone());
        puller
    });
    let api = FederationApi::new(
        store,
        auth,
        config.federation.division.clone(),
        Some(tls.clone()),
        puller,
        stopping,
    );
    Ok(xinqiao_proto::v1::federation_service_server::FederationServiceServer::new(api))
}
