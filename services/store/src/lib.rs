//! Storage for the hub: one trait per aggregate, implemented for SQLite (the embedded default)
//! and PostgreSQL (production, several hub nodes). The backend is chosen once, at start-up, by
//! the database URL's scheme. SQL lives here and nowhere else; errors leave as domain errors.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use xinqiao_domain::Result;
use xinqiao_domain::access::{AccessGrant, AccessRequest, ErrorReport, ReportState, RequestState};
use xinqiao_domain::audit::{AuditEvent, ChainLinker, ChainedEvent};
use xinqiao_domain::catalogue::{CatalogEntry, EntryContent, EntryFilter, ShareType};
use xinqiao_domain::compatibility::CompatibilityMode;
use xinqiao_domain::department::{Department, DepartmentProfile};
use xinqiao_domain::exchange::{ChangeOp, Dataset, DatasetKind};
use xinqiao_domain::interface::{Interface, InterfaceSpec};
use xinqiao_domain::lifecycle::{EntryAction, EntryState};
use xinqiao_domain::policy::EntryVisibility;
use xinqiao_domain::schema::{RegisteredSchema, SchemaRef, Subject};

mod access;
mod audit;
mod catalog;
mod console;
mod departments;
mod error;
mod exchange;
mod federation;
mod interface;
mod operations;
pub mod postgres;
mod schemas;
mod search;
pub mod sqlite;

pub use console::{ConsoleSession, ConsoleStore, SignInToken};
pub use operations::{HubNode, OpenStream, OperationsStore, SchemaStatus};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Registered departments.
#[async_trait]
pub trait DepartmentStore: Send + Sync {
    /// Registers a new, active department. ALREADY_EXISTS if the code is taken.
    async fn register_department(&self, profile: &DepartmentProfile, at: DateTime<Utc>) -> Result<Department>;
    /// Replaces name, division code and contact. NOT_FOUND if unknown.
    async fn update_department(&self, profile: &DepartmentProfile, at: DateTime<Utc>) -> Result<Department>;
    /// Activates or deactivates a department. NOT_FOUND if unknown.
    async fn set_department_active(&self, code: &str, active: bool, at: DateTime<Utc>) -> Result<Department>;
    async fn get_department(&self, code: &str) -> Result<Option<Department>>;
    /// Departments ordered by code, starting after `after`, at most `limit`.
    async fn list_departments(
        &self,
        after: Option<&str>,
        limit: u32,
        include_inactive: bool,
    ) -> Result<Vec<Department>>;
    /// Forwards the code of each department that any hub node registers, changes, deactivates or
    /// reactivates, until `sink` closes, so that every node can forget what it cached. Returns
    /// false when the backend has no other nodes to hear from (SQLite).
    async fn listen_departments(&self, sink: tokio::sync::mpsc::Sender<String>) -> Result<bool>;
}

/// One change in an entry's history, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryChange {
    pub action: EntryAction,
    /// A department code or `admin:<name>`.
    pub actor: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// A version of an entry: the change that made it and the state it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryVersionRecord {
    pub version: u64,
    pub state: EntryState,
    pub change: EntryChange,
}

/// The catalogue: entries, their versions and history.
#[async_trait]
pub trait CatalogStore: Send + Sync {
    /// Stores a new draft at version 1 and assigns its resource code: the classification, "/",
    /// and the next sequence number in that classification, unique even with several hubs.
    async fn create_entry(
        &self,
        provider_code: &str,
        content: &EntryContent,
        change: &EntryChange,
    ) -> Result<CatalogEntry>;

    /// Stores `entry` as its next version (`entry.version` must be the current version + 1) with
    /// the change that made it, in one transaction. ABORTED if the entry is no longer at
    /// `entry.version - 1` (a concurrent change won); NOT_FOUND if it does not exist.
    async fn save_entry_version(&self, entry: &CatalogEntry, change: &EntryChange) -> Result<CatalogEntry>;

    /// The current version.
    async fn get_entry(&self, resource_code: &str) -> Result<Option<CatalogEntry>>;
    /// The entry as it was at `version`.
    async fn get_entry_version(&self, resource_code: &str, version: u64) -> Result<Option<CatalogEntry>>;
    /// Every version, oldest first (empty if the entry does not exist).
    async fn list_entry_versions(&self, resource_code: &str) -> Result<Vec<EntryVersionRecord>>;

    /// Current entries the visibility allows that match the filter, at most `limit`, after the
    /// position `after` (its origin is ignored). The keyword is a literal substring (quotes, `%`
    /// and `_` match themselves) of the name, summary or a data-item name, found through an
    /// index; with one, results are ordered by relevance tier (the name first, see
    /// `xinqiao_domain::search`) and then by resource code, without one by resource code.
    async fn search_entries(
        &self,
        visibility: &EntryVisibility,
        filter: &EntryFilter,
        after: Option<&xinqiao_domain::search::SearchPosition>,
        limit: u32,
    ) -> Result<Vec<CatalogEntry>>;

    /// The current versions of the entries with these codes, in code order; codes that name no
    /// entry are left out. One read however many (the caller bounds the list, a page's worth).
    async fn get_entries(&self, resource_codes: &[String]) -> Result<Vec<CatalogEntry>>;

    /// Current entries last changed at or after `since` (`updated_at`), ordered by
    /// (`updated_at`, code), after the position (`after_at`, `after_code`) when given, at most
    /// `limit`: how a hub node follows the changes other nodes make.
    async fn entries_changed_since(
        &self,
        since: DateTime<Utc>,
        after: Option<(DateTime<Utc>, String)>,
        limit: u32,
    ) -> Result<Vec<CatalogEntry>>;
}

/// What registering a schema did.
#[derive(Debug, Clone, PartialEq)]
pub enum Registration {
    /// A new version was stored.
    Created(RegisteredSchema),
    /// A live version with the same fingerprint already existed; nothing was written.
    Existing(RegisteredSchema),
}

/// A schema to store as the next version of its subject.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSchema<'a> {
    pub subject: &'a str,
    pub content: &'a str,
    pub fingerprint: &'a str,
    pub references: &'a [SchemaRef],
    pub registered_by: &'a str,
    pub at: DateTime<Utc>,
    /// The version the caller checked compatibility against (the subject's highest version,
    /// deleted ones included, or 0 for a new subject). ABORTED if another version was
    /// registered meanwhile, so compatibility is never checked against a stale history.
    pub after_version: u32,
}

/// The schema registry: subjects, versions, compatibility settings and the schemas bound to
/// catalogue entries.
#[async_trait]
pub trait SchemaStore: Send + Sync {
    /// Stores a new version (`after_version + 1`) unless a live version of the subject has the
    /// same fingerprint, in which case that version is returned. The first version of a subject
    /// makes `registered_by` its owner. A reference to a missing or deleted version: NOT_FOUND.
    async fn register_schema(&self, schema: &NewSchema<'_>) -> Result<Registration>;

    async fn get_subject(&self, subject: &str) -> Result<Option<Subject>>;
    /// Subjects ordered by name, after `after`, at most `limit`. Without `include_deleted`,
    /// subjects whose versions are all deleted are left out.
    async fn list_subjects(&self, after: Option<&str>, limit: u32, include_deleted: bool) -> Result<Vec<Subject>>;

    /// One version (deleted or not: the caller decides what to show).
    async fn get_schema(&self, subject: &str, version: u32) -> Result<Option<RegisteredSchema>>;
    /// The highest live version.
    async fn latest_schema(&self, subject: &str) -> Result<Option<RegisteredSchema>>;
    /// Every version, oldest first; deleted ones only when asked.
    async fn list_schema_versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<RegisteredSchema>>;

    /// Soft delete (or undelete). NOT_FOUND if the version does not exist.
    async fn set_schema_deleted(&self, subject: &str, version: u32, deleted: bool) -> Result<RegisteredSchema>;
    /// Removes a soft-deleted version for good. FAILED_PRECONDITION if it is not soft-deleted
    /// first, or while a catalogue entry is bound to it or another schema references it.
    async fn delete_schema_permanently(&self, subject: &str, version: u32) -> Result<()>;

    /// The registry-wide default mode (BACKWARD until set).
    async fn default_compatibility(&self) -> Result<CompatibilityMode>;
    async fn set_default_compatibility(&self, mode: CompatibilityMode) -> Result<()>;
    /// Sets or clears (`None`: follow the default) a subject's mode. NOT_FOUND for an unknown subject.
    async fn set_subject_compatibility(&self, subject: &str, mode: Option<CompatibilityMode>) -> Result<Subject>;

    /// Binds a catalogue entry to a schema version, replacing any earlier binding.
    async fn bind_entry_schema(&self, binding: &EntrySchemaBinding) -> Result<()>;
    async fn entry_schema(&self, resource_code: &str) -> Result<Option<EntrySchemaBinding>>;
}

/// Which schema version describes a catalogue entry's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySchemaBinding {
    pub resource_code: String,
    pub schema: SchemaRef,
    pub bound_by: String,
    pub at: DateTime<Utc>,
}

/// A dataset as the exchange catalogue lists it: the dataset and what its entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetListing {
    pub dataset: Dataset,
    pub name: String,
    pub provider_name: String,
    pub share_type: ShareType,
    pub entry_state: EntryState,
}

/// Filters of the exchange catalogue; empty means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetFilter {
    /// Substring of the entry's name or the resource code (literal, case-insensitive).
    pub keyword: String,
    pub provider_code: String,
    pub kind: Option<DatasetKind>,
    pub share_type: Option<ShareType>,
    /// Leave out this provider's datasets (a caller listing what others share).
    pub exclude_provider: Option<String>,
    /// Only datasets whose entry is published, or provided by this department.
    pub published_or_provided_by: Option<String>,
    /// Only datasets on which this department holds a grant active at this moment.
    pub granted_to: Option<(String, DateTime<Utc>)>,
}

/// One change as the publisher's batch stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChange {
    pub op: ChangeOp,
    /// The key as a JSON array (see `xinqiao_domain::exchange::record_key`).
    pub key: String,
    /// The record's JSON text, exactly as published (upserts only).
    pub record: Option<String>,
}

/// The audit event of a publish, appended to the chain in the batch's own transaction: no batch
/// is stored without its event, and a publish pays for one write, not two. The store adds the
/// outcome to the event's JSON detail (`accepted`, `first_sequence`, `last_sequence`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchAudit<'a> {
    pub event: &'a AuditEvent,
    pub linker: ChainLinker,
}

/// A batch to commit atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBatch<'a> {
    pub dataset: &'a str,
    pub idempotency_key: &'a str,
    pub changes: &'a [NewChange],
    /// The publisher's view of what was rejected (opaque to the store, returned on a replay).
    pub rejected: &'a str,
    pub at: DateTime<Utc>,
    /// Appended with a fresh commit (not with a replay, which writes nothing).
    pub audit: Option<BatchAudit<'a>>,
}

/// What a committed batch was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResult {
    pub accepted: u32,
    pub rejected: String,
    /// 0 and 0 when the batch stored no change.
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// True when the idempotency key had been committed before: nothing was written now.
    pub replayed: bool,
}

/// A change read back from a dataset's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChange {
    pub sequence: u64,
    pub op: ChangeOp,
    pub key: String,
    /// The record's JSON as the publish validated and stored it. It is read back as bytes and
    /// not checked again: the drain sends it on as it is (protobuf `bytes`), and only a reader
    /// whose grant shapes records parses it.
    pub record: Option<Vec<u8>>,
    pub published_at: DateTime<Utc>,
}

/// A named consumer's position in a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerCursor {
    pub dataset: String,
    pub department: String,
    pub consumer: String,
    pub acknowledged: u64,
    pub updated_at: DateTime<Utc>,
}

/// A file upload into a file dataset, resumable by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub id: String,
    pub dataset: String,
    pub file_name: String,
    pub size: u64,
    pub sha256: String,
    pub received: u64,
    /// The file's sequence number in the dataset once complete.
    pub sequence: Option<u64>,
    pub started_by: String,
    pub started_at: DateTime<Utc>,
}

/// Datasets, their append-only change logs, consumer cursors and files.
#[async_trait]
pub trait ExchangeStore: Send + Sync {
    /// ALREADY_EXISTS if the entry has a dataset; NOT_FOUND if the entry does not exist.
    async fn create_dataset(&self, dataset: &Dataset) -> Result<Dataset>;
    async fn get_dataset(&self, id: &str) -> Result<Option<Dataset>>;
    /// Moves a table dataset to another version of its schema subject.
    async fn set_dataset_schema(&self, id: &str, schema: &SchemaRef) -> Result<Dataset>;
    /// Datasets ordered by id, after `after`, at most `limit`.
    async fn list_datasets(
        &self,
        filter: &DatasetFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DatasetListing>>;

    /// Commits a batch in one transaction, or returns the first result when its idempotency key
    /// was committed before (`replayed`). The changes get consecutive sequence numbers after the
    /// dataset's last one, assigned so that a reader that has seen sequence N never afterwards
    /// sees a change numbered N or lower appear — also with publishers on several hub nodes.
    /// The dataset's record count, last sequence and last publish time move with it. On
    /// PostgreSQL the commit notifies the other nodes (see `listen_changes`).
    async fn publish_batch(&self, batch: &NewBatch<'_>) -> Result<BatchResult>;

    /// Changes numbered above `after`, in order, at most `limit`; and the dataset's last sequence.
    async fn fetch_changes(&self, dataset: &str, after: u64, limit: u32) -> Result<(Vec<StoredChange>, u64)>;
    /// The latest change of each key among changes numbered up to `as_of`, for keys whose latest
    /// change is an upsert, ordered by key, after the key `after_key`, at most `limit`.
    async fn snapshot_page(
        &self,
        dataset: &str,
        as_of: u64,
        after_key: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredChange>>;
    /// The last sequence number of each named dataset that exists.
    async fn dataset_heads(&self, ids: &[String]) -> Result<Vec<(String, u64)>>;
    /// Forwards `(dataset, last_sequence)` as other hub nodes commit batches, until `sink` closes.
    /// Returns false when the backend has no other nodes to hear from (SQLite).
    async fn listen_changes(&self, sink: tokio::sync::mpsc::Sender<(String, u64)>) -> Result<bool>;

    /// Moves a named consumer's acknowledged position forward (never back), creating it.
    async fn acknowledge(&self, cursor: &ConsumerCursor) -> Result<ConsumerCursor>;
    async fn get_consumer(&self, dataset: &str, department: &str, consumer: &str) -> Result<Option<ConsumerCursor>>;

    async fn start_upload(&self, upload: &Upload) -> Result<Upload>;
    async fn get_upload(&self, id: &str) -> Result<Option<Upload>>;
    /// Appends bytes at `offset`, which must equal the bytes received (FAILED_PRECONDITION naming
    /// the expected offset otherwise) and stay within the declared size.
    async fn append_upload(&self, id: &str, offset: u64, data: &[u8]) -> Result<Upload>;
    /// The upload's bytes from `offset`, at most `max` of them.
    async fn read_upload(&self, id: &str, offset: u64, max: u32) -> Result<Vec<u8>>;
    /// Records a fully received, verified upload as the current version of its file: a change
    /// in the dataset's log (key `["<file name>"]`, record the file's metadata JSON).
    async fn complete_upload(&self, id: &str, metadata: &str, at: DateTime<Utc>) -> Result<Upload>;
    /// The completed upload that is the current version of a file.
    async fn current_file(&self, dataset: &str, file_name: &str) -> Result<Option<Upload>>;
}

/// Which access requests to list; each set field narrows the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFilter {
    pub applicant: Option<String>,
    pub provider: Option<String>,
    /// Requests this department made or must answer.
    pub party: Option<String>,
    pub dataset: Option<String>,
    pub state: Option<RequestState>,
    /// Pending requests whose due day is before this day (overdue on it).
    pub due_before: Option<NaiveDate>,
}

/// Which grants to list; each set field narrows the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFilter {
    pub grantee: Option<String>,
    pub provider: Option<String>,
    /// Grants this department holds or gave.
    pub party: Option<String>,
    pub dataset: Option<String>,
    /// Only grants active at this moment: given by then, and neither revoked nor expired then.
    pub active_at: Option<DateTime<Utc>>,
}

/// Which error reports to list; each set field narrows the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportFilter {
    pub reporter: Option<String>,
    pub provider: Option<String>,
    /// Reports this department made or must resolve.
    pub party: Option<String>,
    pub dataset: Option<String>,
    pub state: Option<ReportState>,
}

/// Access requests, grants and error reports. Ids are chosen by the hub (UUIDv7, so that ordering
/// by id is ordering by time); lists are ordered by id, after `after`, at most `limit`.
#[async_trait]
pub trait AccessStore: Send + Sync {
    async fn create_request(&self, request: &AccessRequest) -> Result<AccessRequest>;
    async fn get_request(&self, id: &str) -> Result<Option<AccessRequest>>;
    async fn list_requests(
        &self,
        filter: &RequestFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AccessRequest>>;
    /// Stores the answer to a pending request (`request` carries its new state, answer time,
    /// answerer, reason and grant id) and, for an approval, its grant, in one transaction.
    /// FAILED_PRECONDITION if the request is no longer pending (a concurrent answer won).
    async fn settle_request(&self, request: &AccessRequest, grant: Option<&AccessGrant>) -> Result<AccessRequest>;

    async fn get_grant(&self, id: &str) -> Result<Option<AccessGrant>>;
    async fn list_grants(&self, filter: &GrantFilter, after: Option<&str>, limit: u32) -> Result<Vec<AccessGrant>>;
    /// Every grant a department holds on a dataset, in any state.
    async fn grants_of(&self, dataset: &str, grantee: &str) -> Result<Vec<AccessGrant>>;
    /// FAILED_PRECONDITION if already revoked; NOT_FOUND if unknown.
    async fn revoke_grant(&self, id: &str, by: &str, reason: &str, at: DateTime<Utc>) -> Result<AccessGrant>;

    async fn create_report(&self, report: &ErrorReport) -> Result<ErrorReport>;
    async fn get_report(&self, id: &str) -> Result<Option<ErrorReport>>;
    async fn list_reports(&self, filter: &ReportFilter, after: Option<&str>, limit: u32) -> Result<Vec<ErrorReport>>;
    /// Stores the resolution of an open report (`report` carries state, time, resolver, resolution
    /// and corrected sequence). FAILED_PRECONDITION if it is no longer open.
    async fn resolve_report(&self, report: &ErrorReport) -> Result<ErrorReport>;
}

/// Which audit events to list; each set field narrows the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub action: Option<String>,
    /// From this moment (inclusive) to that one (exclusive).
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Events this department did or that concern it (`actor` or `about`).
    pub involving: Option<String>,
}

/// Where the stored chain starts: after the last pruned event, or at the genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// The last pruned event's sequence (0 before any pruning) and hash (`audit::GENESIS` then).
    pub sequence: u64,
    pub hash: String,
    pub pruned_at: Option<DateTime<Utc>>,
}

/// The audit trail: an append-only hash chain.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends events (their `sequence` is ignored) in order after the chain's head, each linked
    /// to the one before with `hash`, in one transaction; the chain never forks, also with
    /// several hub nodes appending at once. Returns the last sequence given.
    async fn append_audit(&self, events: &[AuditEvent], linker: &ChainLinker) -> Result<u64>;
    /// Events matching the filter, ordered by sequence, numbered above `after`, at most `limit`.
    async fn list_audit(&self, filter: &AuditFilter, after: u64, limit: u32) -> Result<Vec<ChainedEvent>>;
    async fn audit_checkpoint(&self) -> Result<AuditCheckpoint>;
    /// The last event appended: its sequence and hash (0 and `audit::GENESIS` for an empty trail).
    async fn audit_head(&self) -> Result<(u64, String)>;
    /// Removes the oldest events recorded before `before` (a prefix of the chain: it stops at the
    /// first event at or after `before`) and records the last removed one as the checkpoint, so
    /// that the rest still verifies. Returns how many were removed.
    async fn prune_audit(&self, before: DateTime<Utc>, at: DateTime<Utc>) -> Result<u64>;
}

/// The interfaces (接口) providers share through the hub.
#[async_trait]
pub trait InterfaceStore: Send + Sync {
    /// Registers the interface of entry `code`, or replaces its specification: enabled, with
    /// `at` as its update time (and registration time, the first time).
    async fn put_interface(
        &self,
        code: &str,
        provider_code: &str,
        spec: &InterfaceSpec,
        at: DateTime<Utc>,
    ) -> Result<Interface>;
    async fn get_interface(&self, code: &str) -> Result<Option<Interface>>;
    /// Interfaces ordered by code, of one provider or all, starting after `after`, at most `limit`.
    async fn list_interfaces(&self, provider: Option<&str>, after: Option<&str>, limit: u32) -> Result<Vec<Interface>>;
    /// Takes an interface out of service with the reason. NOT_FOUND if there is none.
    async fn disable_interface(&self, code: &str, reason: &str, at: DateTime<Utc>) -> Result<Interface>;
}

/// Federation (平台级联): the peer hubs registered here, this hub's catalogue feed — each of its
/// own entries as last published or withdrawn (written with the entry's version, in its
/// transaction) and each entry aggregated from a child — and the search of aggregated entries.
#[async_trait]
pub trait FederationStore: Send + Sync {
    /// Registers a peer hub. ALREADY_EXISTS if its division code is registered.
    async fn add_peer(&self, peer: &xinqiao_domain::federation::PeerHub)
    -> Result<xinqiao_domain::federation::PeerHub>;
    async fn get_peer(&self, division_code: &str) -> Result<Option<xinqiao_domain::federation::PeerHub>>;
    /// Every peer, ordered by division code.
    async fn list_peers(&self) -> Result<Vec<xinqiao_domain::federation::PeerHub>>;
    /// Forgets a peer and, in the same transaction, withdraws every published entry aggregated
    /// through it (each a new change of the feed, so that this hub's parent withdraws it too).
    /// Returns how many were withdrawn. NOT_FOUND if the peer is not registered.
    async fn remove_peer(&self, division_code: &str, at: DateTime<Utc>) -> Result<u64>;
    /// The feed's changes after position `after`, in order, at most `limit`; and the feed's head
    /// (the last position given), read first: every change up to it is committed.
    async fn catalogue_changes(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<(Vec<xinqiao_domain::federation::CatalogueChange>, u64)>;
    /// Applies changes read from a child's feed (its positions, checked by the caller) as changes
    /// of this hub's own feed via that child, and moves the child's cursor from `from` to
    /// `cursor`, in one transaction. ABORTED if the cursor is no longer at `from` (another hub node
    /// applied them, or the peer was removed): nothing is applied twice. A withdrawal of an
    /// entry never aggregated here is passed over. Returns how many changes were applied.
    async fn apply_catalogue_changes(
        &self,
        child: &str,
        from: u64,
        changes: &[xinqiao_domain::federation::CatalogueChange],
        cursor: u64,
    ) -> Result<u64>;
    /// Entries aggregated from children that match the filter (as `search_entries` matches), ordered
    /// as it orders (with origin hub before resource code), after `after`, at most `limit`.
    /// Withdrawn ones only with `EntryVisibility::All`.
    async fn search_federated_entries(
        &self,
        visibility: &EntryVisibility,
        filter: &EntryFilter,
        after: Option<&xinqiao_domain::search::SearchPosition>,
        limit: u32,
    ) -> Result<Vec<xinqiao_domain::federation::FederatedEntry>>;
    /// The aggregated entries holding this resource code (from any origin hub), in their latest
    /// state: where a department's read of a dataset held on another hub is relayed (跨级交换).
    async fn federated_entries(&self, resource_code: &str) -> Result<Vec<xinqiao_domain::federation::FederatedEntry>>;
    /// The aggregated entries with these (origin hub, resource code) keys, in their latest state,
    /// ordered by key; keys that name none are left out. One read for a page's worth.
    async fn get_federated_entries(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<xinqiao_domain::federation::FederatedEntry>>;
}

/// Everything the hub stores.
pub trait Store:
    DepartmentStore
    + FederationStore
    + CatalogStore
    + SchemaStore
    + ExchangeStore
    + AccessStore
    + AuditStore
    + InterfaceStore
    + OperationsStore
    + ConsoleStore
{
}

impl<T> Store for T where
    T: DepartmentStore
        + FederationStore
        + CatalogStore
        + SchemaStore
        + ExchangeStore
        + AccessStore
        + AuditStore
        + InterfaceStore
        + OperationsStore
        + ConsoleStore
{
}

/// Opens the store a database URL names, creating it and running its migrations:
/// `sqlite://PATH` (the file is created on first start) or `postgres://…`.
pub async fn open(database_url: &str) -> Result<Arc<dyn Store>> {
    let store = connect(database_url).await?;
    store.apply_migrations().await?;
    Ok(store)
}

/// Opens the store a database URL names without touching its schema, for a hub that migrates as
/// a step of its own (`xinqiao migrate`) and for the operations commands.
pub async fn connect(database_url: &str) -> Result<Arc<dyn Store>> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(database_url).await?))
    } else if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(database_url)?))
    } else {
        Err(xinqiao_domain::Error::invalid(
            "database_url",
            "must start with sqlite: (embedded) or postgres:// (PostgreSQL)",
        ))
    }
}
