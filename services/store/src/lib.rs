//! Storage for the hub: one trait per aggregate, implemented for SQLite (the embedded default)
//! and PostgreSQL (production, several hub nodes). The backend is chosen once, at start-up, by
//! the database URL's scheme. SQL lives here and nowhere else; errors leave as domain errors.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use xinqiao_domain::Result;
use xinqiao_domain::catalogue::{CatalogEntry, EntryContent, EntryFilter};
use xinqiao_domain::department::{Department, DepartmentProfile};
use xinqiao_domain::lifecycle::{EntryAction, EntryState};
use xinqiao_domain::policy::EntryVisibility;

mod error;
pub mod postgres;
pub mod sqlite;

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

    /// Current entries the visibility allows that match the filter, ordered by resource code,
    /// starting after `after`, at most `limit`. The keyword is a literal substring (quotes, `%`
    /// and `_` match themselves) of the name, summary or a data-item name.
    async fn search_entries(
        &self,
        visibility: &EntryVisibility,
        filter: &EntryFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CatalogEntry>>;
}

/// Everything the hub stores.
pub trait Store: DepartmentStore + CatalogStore {}

impl<T: DepartmentStore + CatalogStore> Store for T {}

/// Opens the store a database URL names, creating it and running its migrations:
/// `sqlite://PATH` (the file is created on first start) or `postgres://…`.
pub async fn open(database_url: &str) -> Result<Arc<dyn Store>> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(database_url).await?))
    } else if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open(database_url).await?))
    } else {
        Err(xinqiao_domain::Error::invalid(
            "database_url",
            "must start with sqlite: (embedded) or postgres:// (PostgreSQL)",
        ))
    }
}
