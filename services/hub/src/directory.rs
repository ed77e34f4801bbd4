//! DirectoryService: departments and the catalogue. Each handler reads as its rule:
//! authenticate, authorise, validate, store, answer.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use tonic::{Request, Response, Status};
use xinqiao_domain::catalogue::CatalogEntry;
use xinqiao_domain::dcat::{self, CatalogueSite};
use xinqiao_domain::identity::Caller;
use xinqiao_domain::lifecycle::EntryAction;
use xinqiao_domain::{Error, Result, identifiers, paging, policy, text};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::directory_service_server::DirectoryService;
use xinqiao_store::{EntryChange, Store};

use crate::audit::CallNote;
use crate::auth::Authenticator;
use crate::cache::{Cache, FRESH_FOR};
use crate::convert;
use crate::paging::{decode, next_token};
use crate::search_index::CatalogueSearch;
use crate::status::answer;

const DEPARTMENTS: &str = "departments";

/// A catalogue entry as the directory caches it: the entry, and its API message encoded once,
/// which a search answers with as it is (`pb::SearchEntriesResponse::encoded`).
#[derive(Debug, Clone)]
pub struct CachedEntry {
    pub entry: CatalogEntry,
    pub wire: Bytes,
}

impl CachedEntry {
    pub fn new(entry: CatalogEntry) -> Self {
        let wire = Bytes::from(convert::entry(entry.clone()).encode_to_vec());
        Self { entry, wire }
    }
}

/// Current entries by resource code (see `cache` for how fresh).
pub type EntryCache = Cache<String, CachedEntry>;

pub struct DirectoryApi {
    store: Arc<dyn Store>,
    auth: Authenticator,
    /// Current entries for GetEntry, the directory's most frequent call, and for interface
    /// calls; forgotten by every change made here (see `cache` for other hub nodes).
    entries: Arc<EntryCache>,
    /// The catalogue search in memory, told of every change made here.
    search: Arc<CatalogueSearch>,
    /// What the catalogue export says of this hub.
    catalogue: CatalogueSite,
}

impl DirectoryApi {
    /// The directory; its search reads the store until [`CatalogueSearch::start`] (on
    /// [`DirectoryApi::catalogue_search`]) has built the index.
    pub fn new(store: Arc<dyn Store>, auth: Authenticator) -> Self {
        let entries = Arc::new(Cache::new(FRESH_FOR));
        Self {
            auth,
            search: Arc::new(CatalogueSearch::new(store.clone(), entries.clone())),
            store,
            entries,
            catalogue: CatalogueSite::default(),
        }
    }

    /// The catalogue search, to start and to ask how large it is.
    pub fn catalogue_search(&self) -> Arc<CatalogueSearch> {
        self.search.clone()
    }

    /// How the catalogue export names the platform and its address (the defaults otherwise).
    pub fn with_catalogue(mut self, site: CatalogueSite) -> Self {
        self.catalogue = site;
        self
    }

    /// The entries as cached, for the services that read an entry on every call (an interface
    /// call); the directory forgets an entry here when it changes it.
    pub fn entry_cache(&self) -> Arc<EntryCache> {
        self.entries.clone()
    }

    async fn visible_entry(&self, caller: &Caller, resource_code: &str) -> Result<CatalogEntry> {
        visible_entry(self.store.as_ref(), caller, resource_code).await
    }

    /// Applies a lifecycle action to an entry: the caller must be allowed to, the entry must be in
    /// a state that permits it, and (when given) still at the version the caller last saw.
    // The arguments are the request's own fields; a struct would only repeat their names.
    #[allow(clippy::too_many_arguments)]
    async fn transition(
        &self,
        note: &CallNote,
        caller: &Caller,
        resource_code: &str,
        expected_version: u64,
        action: EntryAction,
        reason: String,
        edit: impl FnOnce(&mut CatalogEntry) -> Result<()>,
    ) -> Result<CatalogEntry> {
        let mut entry = self.visible_entry(caller, resource_code).await?;
        note.about(&entry.resource_code, &entry.provider_code);
        policy::act_on_entry(caller, &entry, action)?;
        check_version(&entry, expected_version)?;
        let now = crate::clock::now();
        entry.state = entry.state.apply(action)?;
        // A return must tell the provider what to change.
        check_reason(&reason, action == EntryAction::Return)?;
        entry.version += 1;
        entry.updated_at = now;
        entry.state_reason = reason.clone();
        edit(&mut entry)?;
        let change = EntryChange {
            action,
            actor: caller.actor(),
            reason,
            at: now,
        };
        let saved = self.store.save_entry_version(&entry, &change).await;
        self.entries.forget(&entry.resource_code);
        if let Ok(saved) = &saved {
            self.search.saved(saved);
        }
        saved
    }

    /// The current entry for GetEntry, from the cache when fresh. Who may see it is decided on
    /// every call, from the entry as cached.
    async fn current_entry(&self, caller: &Caller, resource_code: &str) -> Result<CatalogEntry> {
        cached_visible_entry(self.store.as_ref(), &self.entries, caller, resource_code).await
    }
}

/// As [`visible_entry`], from `entries` when fresh. Who may see it is decided on every call, from
/// the entry as cached.
pub(crate) async fn cached_visible_entry(
    store: &dyn Store,
    entries: &EntryCache,
    caller: &Caller,
    resource_code: &str,
) -> Result<CatalogEntry> {
    let entry = match entries.get_shared(resource_code) {
        Some(cached) => cached.entry.clone(),
        None => {
            let not_found = || entry_not_found(resource_code);
            let since = entries.mark();
            let entry = store.get_entry(resource_code).await?.ok_or_else(not_found)?;
            entries.put(since, resource_code.to_string(), CachedEntry::new(entry.clone()));
            entry
        }
    };
    policy::read_entry(caller, &entry)?;
    Ok(entry)
}

/// The current entry, if the caller may see it; an entry it may not see is not found.
pub(crate) async fn visible_entry(store: &dyn Store, caller: &Caller, resource_code: &str) -> Result<CatalogEntry> {
    let not_found = || entry_not_found(resource_code);
    let entry = store.get_entry(resource_code).await?.ok_or_else(not_found)?;
    policy::read_entry(caller, &entry)?;
    Ok(entry)
}

/// NOT_FOUND for a resource code, echoing at most its first 64 characters: a status message
/// travels in a response header, which a caller's megabyte of "code" must not overflow.
fn entry_not_found(resource_code: &str) -> Error {
    Error::NotFound(format!("catalogue entry {}", text::shorten(resource_code, 64)))
}

/// A department code that names no department unless it is a well-formed 统一社会信用代码,
/// refused before any lookup (the store's NOT_FOUND would echo all of it).
fn check_code(code: &str) -> Result<()> {
    identifiers::validate_uscc(code).map_err(|e| Error::invalid("code", e))
}

fn check_version(entry: &CatalogEntry, expected: u64) -> Result<()> {
    if expected != 0 && expected != entry.version {
        return Err(Error::Aborted(format!(
            "entry {} is at version {}, not {expected}; read it again",
            entry.resource_code, entry.version
        )));
    }
    Ok(())
}

fn check_reason(reason: &str, required: bool) -> Result<()> {
    text::check(reason, required, 2000, true).map_err(|e| Error::invalid("reason", e))
}

#[tonic::async_trait]
impl DirectoryService for DirectoryApi {
    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        answer(async {
            let identity = match self.auth.anyone(&request).await? {
                Caller::Admin(name) => pb::who_am_i_response::Identity::Admin(name),
                Caller::Evaluator(name) => pb::who_am_i_response::Identity::Evaluator(name),
                Caller::Department(code) => {
                    let dept = self.store.get_department(&code).await?.ok_or(Error::NotFound(code))?;
                    pb::who_am_i_response::Identity::Department(convert::department(dept))
                }
            };
            Ok(pb::WhoAmIResponse {
                identity: Some(identity),
            })
        })
        .await
    }

    async fn register_department(
        &self,
        request: Request<pb::RegisterDepartmentRequest>,
    ) -> Result<Response<pb::Department>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let r = request.get_ref().clone();
            note.about(&r.code, &r.code);
            policy::manage_departments(&self.auth.caller(&request).await?)?;
            let profile = convert::profile(r.code, r.name, r.division_code, r.contact);
            profile.validate()?;
            let dept = self.store.register_department(&profile, crate::clock::now()).await;
            self.auth.forget_department(&profile.code);
            let dept = dept?;
            Ok(convert::department(dept))
        })
        .await
    }

    async fn update_department(
        &self,
        request: Request<pb::UpdateDepartmentRequest>,
    ) -> Result<Response<pb::Department>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let r = request.get_ref().clone();
            note.about(&r.code, &r.code);
            policy::manage_departments(&self.auth.caller(&request).await?)?;
            let profile = convert::profile(r.code, r.name, r.division_code, r.contact);
            profile.validate()?;
            let updated = self.store.update_department(&profile, crate::clock::now()).await;
            self.auth.forget_department(&profile.code);
            Ok(convert::department(updated?))
        })
        .await
    }

    async fn deactivate_department(
        &self,
        request: Request<pb::DeactivateDepartmentRequest>,
    ) -> Result<Response<pb::Department>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let r = request.get_ref();
            note.about(&r.code, &r.code);
            note.detail("reason", r.reason.clone());
            policy::manage_departments(&self.auth.caller(&request).await?)?;
            check_code(&r.code)?;
            check_reason(&r.reason, false)?;
            let deactivated = self
                .store
                .set_department_active(&r.code, false, crate::clock::now())
                .await;
            self.auth.forget_department(&r.code);
            Ok(convert::department(deactivated?))
        })
        .await
    }

    async fn reactivate_department(
        &self,
        request: Request<pb::ReactivateDepartmentRequest>,
    ) -> Result<Response<pb::Department>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            note.about(&request.get_ref().code, &request.get_ref().code);
            policy::manage_departments(&self.auth.caller(&request).await?)?;
            let code = &request.get_ref().code;
            check_code(code)?;
            let reactivated = self.store.set_department_active(code, true, crate::clock::now()).await;
            self.auth.forget_department(code);
            Ok(convert::department(reactivated?))
        })
        .await
    }

    async fn get_department(
        &self,
        request: Request<pb::GetDepartmentRequest>,
    ) -> Result<Response<pb::Department>, Status> {
        answer(async {
            self.auth.caller(&request).await?;
            let code = &request.get_ref().code;
            let dept = self.store.get_department(code).await?;
            Ok(convert::department(dept.ok_or_else(|| {
                Error::NotFound(format!("department {}", text::shorten(code, 64)))
            })?))
        })
        .await
    }

    async fn list_departments(
        &self,
        request: Request<pb::ListDepartmentsRequest>,
    ) -> Result<Response<pb::ListDepartmentsResponse>, Status> {
        answer(async {
            self.auth.caller(&request).await?;
            let r = request.get_ref();
            let limit = paging::page_size(r.page_size)?;
            let after = decode(DEPARTMENTS, &r.page_token)?;
            let mut page = self
                .store
                .list_departments(after.as_deref(), limit + 1, r.include_inactive)
                .await?;
            let next_page_token = next_token(DEPARTMENTS, &mut page, limit, |d| d.code());
            Ok(pb::ListDepartmentsResponse {
                departments: page.into_iter().map(convert::department).collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn create_entry(
        &self,
        request: Request<pb::CreateEntryRequest>,
    ) -> Result<Response<pb::CatalogEntry>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let provider = policy::create_entry(&caller)?;
            let draft = request
                .into_inner()
                .content
                .ok_or_else(|| Error::invalid("content", "is required"))?;
            let content = convert::draft(draft).validate()?;
            let change = EntryChange {
                action: EntryAction::Create,
                actor: caller.actor(),
                reason: String::new(),
                at: crate::clock::now(),
            };
            let entry = self.store.create_entry(provider, &content, &change).await?;
            self.search.saved(&entry);
            note.about(&entry.resource_code, &entry.provider_code);
            Ok(convert::entry(entry))
        })
        .await
    }

    async fn update_entry(
        &self,
        request: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<pb::CatalogEntry>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.into_inner();
            let draft = r.content;
            let entry = self
                .transition(
                    &note,
                    &caller,
                    &r.resource_code,
                    r.expected_version,
                    EntryAction::Update,
                    String::new(),
                    |entry| {
                        // Validated after the caller is known to be the provider and the
                        // entry's state allows a revision.
                        let draft = draft.ok_or_else(|| Error::invalid("content", "is required"))?;
                        let content = convert::draft(draft).validate()?;
                        if entry.content.classification != content.classification {
                            return Err(Error::invalid(
                                "content.classification",
                                format!(
                                    "is fixed at {} once the entry exists: its resource code derives from it",
                                    entry.content.classification
                                ),
                            ));
                        }
                        entry.content = content;
                        Ok(())
                    },
                )
                .await?;
            Ok(convert::entry(entry))
        })
        .await
    }

    async fn submit_entry(
        &self,
        request: Request<pb::SubmitEntryRequest>,
    ) -> Result<Response<pb::CatalogEntry>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.get_ref();
            let entry = self
                .transition(
                    &note,
                    &caller,
                    &r.resource_code,
                    r.expected_version,
                    EntryAction::Submit,
                    String::new(),
                    |_| Ok(()),
                )
                .await?;
            Ok(convert::entry(entry))
        })
        .await
    }

    async fn publish_entry(
        &self,
        request: Request<pb::PublishEntryRequest>,
    ) -> Result<Response<pb::CatalogEntry>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.get_ref();
            let entry = self
                .transition(
                    &note,
                    &caller,
                    &r.resource_code,
                    r.expected_version,
                    EntryAction::Publish,
                    String::new(),
                    |entry| {
                        entry.published_at = Some(entry.updated_at);
                        Ok(())
                    },
                )
                .await?;
            Ok(convert::entry(entry))
        })
        .await
    }

    async fn return_entry(
        &self,
        request: Request<pb::ReturnEntryRequest>,
    ) -> Result<Response<pb::CatalogEntry>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.into_inner();
            let entry = self
                .transition(
                    &note,
                    &caller,
                    &r.resource_code,
                    r.expected_version,
                    EntryAction::Return,
                    r.reason,
                    |_| Ok(()),
                )
                .await?;
            Ok(convert::entry(entry))
        })
        .await
    }

    async fn withdraw_entry(
        &self,
        request: Request<pb::WithdrawEntryRequest>,
    ) -> Result<Response<pb::CatalogEntry>, Status> {
        let note = CallNote::of(&request);
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.into_inner();
            let entry = self
                .transition(
                    &note,
                    &caller,
                    &r.resource_code,
                    r.expected_version,
                    EntryAction::Withdraw,
                    r.reason,
                    |_| Ok(()),
                )
                .await?;
            Ok(convert::entry(entry))
        })
        .await
    }

    async fn get_entry(&self, request: Request<pb::GetEntryRequest>) -> Result<Response<pb::CatalogEntry>, Status> {
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.get_ref();
            let current = match self.current_entry(&caller, &r.resource_code).await {
                Ok(current) => current,
                // 目录汇聚: an entry aggregated from a child hub, read-only here, its current
                // version only (its history is kept where it is held).
                Err(Error::NotFound(why)) => {
                    let aggregated =
                        crate::federation::aggregated_entry(self.store.as_ref(), &caller, &r.resource_code).await?;
                    return match aggregated {
                        Some(entry) if r.version == 0 || r.version == entry.version => Ok(entry),
                        _ => Err(Error::NotFound(why)),
                    };
                }
                Err(other) => return Err(other),
            };
            if r.version == 0 || r.version == current.version {
                return Ok(convert::entry(current));
            }
            policy::read_history(&caller, &current)?;
            let past = self.store.get_entry_version(&r.resource_code, r.version).await?;
            let past =
                past.ok_or_else(|| Error::NotFound(format!("version {} of entry {}", r.version, r.resource_code)))?;
            Ok(convert::entry(past))
        })
        .await
    }

    async fn list_entry_versions(
        &self,
        request: Request<pb::ListEntryVersionsRequest>,
    ) -> Result<Response<pb::ListEntryVersionsResponse>, Status> {
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let code = &request.get_ref().resource_code;
            let current = self.visible_entry(&caller, code).await?;
            policy::read_history(&caller, &current)?;
            let versions = self.store.list_entry_versions(code).await?;
            Ok(pb::ListEntryVersionsResponse {
                versions: versions.into_iter().map(convert::version).collect(),
            })
        })
        .await
    }

    async fn search_entries(
        &self,
        request: Request<pb::SearchEntriesRequest>,
    ) -> Result<Response<pb::SearchEntriesResponse>, Status> {
        answer(async {
            let caller = self.auth.caller(&request).await?;
            let r = request.get_ref();
            let filter = convert::filter(r)?;
            filter.validate()?;
            let limit = paging::page_size(r.page_size)?;
            let visibility = policy::entry_visibility(&caller);
            // With the entries aggregated from child hubs (目录汇聚), marked with their origin.
            let (entries, next_page_token) = crate::federation::search_entries(
                &self.search,
                &visibility,
                &filter,
                &r.page_token,
                limit,
                r.local_only,
            )
            .await?;
            Ok(pb::SearchEntriesResponse::encoded(entries, next_page_token))
        })
        .await
    }

    async fn export_catalog(
        &self,
        request: Request<pb::ExportCatalogRequest>,
    ) -> Result<Response<pb::ExportCatalogResponse>, Status> {
        answer(async {
            // Whoever may search the catalogue may export it: it holds only what is published.
            self.auth.caller(&request).await?;
            match pb::CatalogFormat::try_from(request.get_ref().format) {
                Ok(pb::CatalogFormat::DcatJsonld) => {}
                _ => {
                    return Err(Error::invalid(
                        "format",
                        "is required: CATALOG_FORMAT_DCAT_JSONLD (DCAT-AP JSON-LD) is the one format",
                    ));
                }
            }
            let document = crate::dcat::dcat_document(self.store.as_ref(), &self.catalogue).await?;
            Ok(pb::ExportCatalogResponse {
                document: crate::dcat::dcat_text(&document)?,
                media_type: dcat::MEDIA_TYPE.into(),
            })
        })
        .await
    }
}
