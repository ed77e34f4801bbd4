//! SQLite, the embedded default: one file, one hub.
//!
//! SQLite lets one connection write at a time. Rather than have several connections queue on the
//! file lock (and fail with SQLITE_BUSY once busy_timeout runs out), every write goes through a
//! pool of exactly one connection, so writers wait in the pool in order. Reads use their own
//! pool; in WAL mode they never block the writer nor wait for it.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Decode, QueryBuilder, Row, Sqlite, Type};
use xinqiao_domain::catalogue::{CatalogEntry, EntryContent, EntryFilter, resource_code};
use xinqiao_domain::department::{Department, DepartmentProfile};
use xinqiao_domain::lifecycle::{EntryAction, EntryState};
use xinqiao_domain::policy::EntryVisibility;
use xinqiao_domain::{Error, Result};

use crate::error::{corrupt, db_error, migrate_error, translate};
use crate::{CatalogStore, DepartmentStore, EntryChange, EntryVersionRecord};

const READERS: u32 = 4;
/// How long a statement waits for a lock held by another process before SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The current version of an entry, with its provider's name.
const SELECT_ENTRY: &str = "SELECT e.resource_code, e.provider_code, d.name AS provider_name, e.content, e.state, \
     e.version, e.state_reason, e.published_at, e.created_at, e.updated_at \
     FROM catalog_entries e JOIN departments d ON d.code = e.provider_code";

const DEPARTMENT_COLUMNS: &str = "code, name, division_code, contact, active, created_at, updated_at";

/// The store on a SQLite file (or in memory, for tests and demos).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
}

impl SqliteStore {
    /// Opens `sqlite:///abs/path.db`, `sqlite://relative.db` or `sqlite::memory:`, creating the
    /// file and its directory if needed, and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("database_url", format!("is not a SQLite URL: {e}")))?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);

        let store = if in_memory(url) {
            // A memory database lives as long as its last connection, and its connections share
            // one cache with table locks that busy_timeout does not wait on: one connection, kept
            // open, does everything.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(db_error)?;
            SqliteStore {
                writer: pool.clone(),
                readers: pool,
            }
        } else {
            if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    tracing::error!(error = %e, dir = %dir.display(), "cannot create the database directory");
                    Error::Internal(format!("creating {}: {e}", dir.display()))
                })?;
            }
            // WAL is a property of the file, set once by the writer; switching needs an exclusive
            // lock that busy_timeout does not wait for, so readers leave the mode alone. NORMAL
            // is durable in WAL mode except for the last commits before a power cut, and spares
            // an fsync per commit.
            let writer_options = options
                .clone()
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(writer_options)
                .await
                .map_err(db_error)?;
            let readers = SqlitePoolOptions::new()
                .max_connections(READERS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(options);
            SqliteStore { writer, readers }
        };
        MIGRATOR.run(&store.writer).await.map_err(migrate_error)?;
        Ok(store)
    }

    /// Closes every connection, letting SQLite checkpoint the WAL into the main file.
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    /// Begins a write transaction. IMMEDIATE takes the write lock at once: a transaction that
    /// read first and wrote later could otherwise fail outright if another process wrote between.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)
    }
}

fn in_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

/// Timestamps are kept to the microsecond, as PostgreSQL keeps them, so that both backends give
/// back exactly what they stored.
fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_nanosecond(at.nanosecond() / 1_000 * 1_000).unwrap_or(at)
}

fn get<'r, T: Decode<'r, Sqlite> + Type<Sqlite>>(row: &'r SqliteRow, column: &str) -> Result<T> {
    row.try_get(column).map_err(db_error)
}

fn db_version(version: u64) -> Result<i64> {
    i64::try_from(version).map_err(|_| Error::invalid("version", "is out of range"))
}

fn department(row: &SqliteRow) -> Result<Department> {
    Ok(Department {
        profile: DepartmentProfile {
            code: get(row, "code")?,
            name: get(row, "name")?,
            division_code: get(row, "division_code")?,
            contact: get(row, "contact")?,
        },
        active: get(row, "active")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

fn entry(row: &SqliteRow) -> Result<CatalogEntry> {
    let content: String = get(row, "content")?;
    let state: String = get(row, "state")?;
    let version: i64 = get(row, "version")?;
    Ok(CatalogEntry {
        resource_code: get(row, "resource_code")?,
        provider_code: get(row, "provider_code")?,
        provider_name: get(row, "provider_name")?,
        content: serde_json::from_str(&content).map_err(|e| corrupt("content", e))?,
        state: EntryState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        version: u64::try_from(version).map_err(|e| corrupt("version", e))?,
        state_reason: get(row, "state_reason")?,
        published_at: get(row, "published_at")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

fn to_json(content: &EntryContent) -> Result<String> {
    serde_json::to_string(content).map_err(|e| Error::Internal(format!("encoding entry content: {e}")))
}

/// Escapes LIKE's wildcards so that `text` matches itself (with `ESCAPE '\'`).
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

async fn fetch_entry(conn: &mut SqliteConnection, resource_code: &str) -> Result<Option<CatalogEntry>> {
    let mut query = QueryBuilder::<Sqlite>::new(SELECT_ENTRY);
    query.push(" WHERE e.resource_code = ").push_bind(resource_code);
    query
        .build()
        .fetch_optional(conn)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(entry)
        .transpose()
}

/// Records the version an entry has just reached, with the change that made it.
async fn insert_version(conn: &mut SqliteConnection, entry: &StoredEntry<'_>, change: &EntryChange) -> Result<()> {
    sqlx::query(
        "INSERT INTO catalog_entry_versions (resource_code, version, state, state_reason, published_at, \
         updated_at, content, action, actor, reason, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(entry.resource_code)
    .bind(entry.version)
    .bind(entry.state.as_str())
    .bind(entry.state_reason)
    .bind(entry.published_at)
    .bind(entry.updated_at)
    .bind(&entry.content_json)
    .bind(change.action.as_str())
    .bind(&change.actor)
    .bind(&change.reason)
    .bind(stored_time(change.at))
    .execute(conn)
    .await
    .map_err(|e| {
        translate(
            e,
            &format!("version {} of catalogue entry {}", entry.version, entry.resource_code),
        )
    })?;
    Ok(())
}

/// An entry version as it is written: the values the rows will hold.
struct StoredEntry<'a> {
    resource_code: &'a str,
    version: i64,
    state: EntryState,
    state_reason: &'a str,
    published_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    content_json: String,
}

#[async_trait]
impl DepartmentStore for SqliteStore {
    async fn register_department(&self, profile: &DepartmentProfile, at: DateTime<Utc>) -> Result<Department> {
        let at = stored_time(at);
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO departments (code, name, division_code, contact, active, created_at, updated_at) VALUES (",
        );
        let mut values = query.separated(", ");
        values.push_bind(&profile.code);
        values.push_bind(&profile.name);
        values.push_bind(&profile.division_code);
        values.push_bind(&profile.contact);
        values.push_bind(true);
        values.push_bind(at);
        values.push_bind(at);
        query.push(") RETURNING ").push(DEPARTMENT_COLUMNS);
        let row = query
            .build()
            .fetch_one(&self.writer)
            .await
            .map_err(|e| translate(e, &format!("department {}", profile.code)))?;
        department(&row)
    }

    async fn update_department(&self, profile: &DepartmentProfile, at: DateTime<Utc>) -> Result<Department> {
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE departments SET name = ");
        query.push_bind(&profile.name);
        query.push(", division_code = ").push_bind(&profile.division_code);
        query.push(", contact = ").push_bind(&profile.contact);
        query.push(", updated_at = ").push_bind(stored_time(at));
        query.push(" WHERE code = ").push_bind(&profile.code);
        query.push(" RETURNING ").push(DEPARTMENT_COLUMNS);
        let row = query.build().fetch_optional(&self.writer).await.map_err(db_error)?;
        row.as_ref()
            .map(department)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("department {}", profile.code)))
    }

    async fn set_department_active(&self, code: &str, active: bool, at: DateTime<Utc>) -> Result<Department> {
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE departments SET active = ");
        query.push_bind(active);
        query.push(", updated_at = ").push_bind(stored_time(at));
        query.push(" WHERE code = ").push_bind(code);
        query.push(" RETURNING ").push(DEPARTMENT_COLUMNS);
        let row = query.build().fetch_optional(&self.writer).await.map_err(db_error)?;
        row.as_ref()
            .map(department)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("department {code}")))
    }

    async fn get_department(&self, code: &str) -> Result<Option<Department>> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query
            .push(DEPARTMENT_COLUMNS)
            .push(" FROM departments WHERE code = ")
            .push_bind(code);
        let row = query.build().fetch_optional(&self.readers).await.map_err(db_error)?;
        row.as_ref().map(department).transpose()
    }

    async fn list_departments(
        &self,
        after: Option<&str>,
        limit: u32,
        include_inactive: bool,
    ) -> Result<Vec<Department>> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query.push(DEPARTMENT_COLUMNS).push(" FROM departments WHERE 1 = 1");
        if !include_inactive {
            query.push(" AND active = ").push_bind(true);
        }
        if let Some(after) = after {
            query.push(" AND code > ").push_bind(after);
        }
        query.push(" ORDER BY code LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.readers).await.map_err(db_error)?;
        rows.iter().map(department).collect()
    }
}

#[async_trait]
impl CatalogStore for SqliteStore {
    async fn create_entry(
        &self,
        provider_code: &str,
        content: &EntryContent,
        change: &EntryChange,
    ) -> Result<CatalogEntry> {
        let at = stored_time(change.at);
        let content_json = to_json(content)?;
        let mut tx = self.begin_write().await?;

        let provider: Option<i64> = sqlx::query_scalar("SELECT 1 FROM departments WHERE code = ?")
            .bind(provider_code)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if provider.is_none() {
            return Err(Error::NotFound(format!("department {provider_code}")));
        }

        let sequence: i64 = sqlx::query_scalar(
            "INSERT INTO entry_sequences (classification, last_sequence) VALUES (?, 1) \
             ON CONFLICT (classification) DO UPDATE SET last_sequence = entry_sequences.last_sequence + 1 \
             RETURNING last_sequence",
        )
        .bind(&content.classification)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        let sequence = u64::try_from(sequence).map_err(|e| corrupt("entry_sequences.last_sequence", e))?;
        let code = resource_code(&content.classification, sequence);

        sqlx::query(
            "INSERT INTO catalog_entries (resource_code, provider_code, classification, name, summary, search_text, \
             share_type, open_type, update_cycle, format, state, version, state_reason, content, published_at, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, '', ?, NULL, ?, ?)",
        )
        .bind(&code)
        .bind(provider_code)
        .bind(&content.classification)
        .bind(&content.name)
        .bind(&content.summary)
        .bind(content.search_text().to_lowercase())
        .bind(content.share.share_type.as_str())
        .bind(content.open.open_type.as_str())
        .bind(content.update_cycle.as_str())
        .bind(content.format.as_str())
        .bind(EntryState::Draft.as_str())
        .bind(&content_json)
        .bind(at)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| translate(e, &format!("catalogue entry {code}")))?;

        let stored = StoredEntry {
            resource_code: &code,
            version: 1,
            state: EntryState::Draft,
            state_reason: "",
            published_at: None,
            updated_at: at,
            content_json,
        };
        insert_version(&mut tx, &stored, change).await?;
        let created = fetch_entry(&mut tx, &code)
            .await?
            .ok_or_else(|| Error::Internal(format!("catalogue entry {code} vanished while being created")))?;
        tx.commit().await.map_err(db_error)?;
        Ok(created)
    }

    async fn save_entry_version(&self, entry: &CatalogEntry, change: &EntryChange) -> Result<CatalogEntry> {
        let version = db_version(entry.version)?;
        let content = &entry.content;
        let stored = StoredEntry {
            resource_code: &entry.resource_code,
            version,
            state: entry.state,
            state_reason: &entry.state_reason,
            published_at: entry.published_at.map(stored_time),
            updated_at: stored_time(entry.updated_at),
            content_json: to_json(content)?,
        };
        let mut tx = self.begin_write().await?;

        // The version condition makes this a compare-and-set: a concurrent change that got here
        // first has moved the version on, and this update then touches no row.
        let updated = sqlx::query(
            "UPDATE catalog_entries SET classification = ?, name = ?, summary = ?, search_text = ?, share_type = ?, \
             open_type = ?, update_cycle = ?, format = ?, state = ?, version = ?, state_reason = ?, content = ?, \
             published_at = ?, updated_at = ? WHERE resource_code = ? AND version = ?",
        )
        .bind(&content.classification)
        .bind(&content.name)
        .bind(&content.summary)
        .bind(content.search_text().to_lowercase())
        .bind(content.share.share_type.as_str())
        .bind(content.open.open_type.as_str())
        .bind(content.update_cycle.as_str())
        .bind(content.format.as_str())
        .bind(stored.state.as_str())
        .bind(version)
        .bind(stored.state_reason)
        .bind(&stored.content_json)
        .bind(stored.published_at)
        .bind(stored.updated_at)
        .bind(&entry.resource_code)
        .bind(version - 1)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;

        if updated.rows_affected() == 0 {
            let current: Option<i64> =
                sqlx::query_scalar("SELECT version FROM catalog_entries WHERE resource_code = ?")
                    .bind(&entry.resource_code)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
            return Err(match current {
                None => Error::NotFound(format!("catalogue entry {}", entry.resource_code)),
                Some(current) => Error::Aborted(format!(
                    "catalogue entry {} is at version {current}, not {}: it was changed meanwhile; read it again",
                    entry.resource_code,
                    version - 1
                )),
            });
        }

        insert_version(&mut tx, &stored, change).await?;
        let saved = fetch_entry(&mut tx, &entry.resource_code).await?.ok_or_else(|| {
            Error::Internal(format!(
                "catalogue entry {} vanished while being saved",
                entry.resource_code
            ))
        })?;
        tx.commit().await.map_err(db_error)?;
        Ok(saved)
    }

    async fn get_entry(&self, resource_code: &str) -> Result<Option<CatalogEntry>> {
        let mut conn = self.readers.acquire().await.map_err(db_error)?;
        fetch_entry(&mut conn, resource_code).await
    }

    async fn get_entry_version(&self, resource_code: &str, version: u64) -> Result<Option<CatalogEntry>> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT e.resource_code, e.provider_code, d.name AS provider_name, v.content, v.state, v.version, \
             v.state_reason, v.published_at, e.created_at, v.updated_at \
             FROM catalog_entry_versions v \
             JOIN catalog_entries e ON e.resource_code = v.resource_code \
             JOIN departments d ON d.code = e.provider_code \
             WHERE v.resource_code = ? AND v.version = ?",
        )
        .bind(resource_code)
        .bind(version)
        .fetch_optional(&self.readers)
        .await
        .map_err(db_error)?;
        row.as_ref().map(entry).transpose()
    }

    async fn list_entry_versions(&self, resource_code: &str) -> Result<Vec<EntryVersionRecord>> {
        let rows = sqlx::query(
            "SELECT version, state, action, actor, reason, changed_at FROM catalog_entry_versions \
             WHERE resource_code = ? ORDER BY version",
        )
        .bind(resource_code)
        .fetch_all(&self.readers)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let version: i64 = get(row, "version")?;
                let state: String = get(row, "state")?;
                let action: String = get(row, "action")?;
                Ok(EntryVersionRecord {
                    version: u64::try_from(version).map_err(|e| corrupt("version", e))?,
                    state: EntryState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
                    change: EntryChange {
                        action: EntryAction::parse(&action).ok_or_else(|| corrupt("action", &action))?,
                        actor: get(row, "actor")?,
                        reason: get(row, "reason")?,
                        at: get(row, "changed_at")?,
                    },
                })
            })
            .collect()
    }

    async fn search_entries(
        &self,
        visibility: &EntryVisibility,
        filter: &EntryFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CatalogEntry>> {
        let mut query = QueryBuilder::<Sqlite>::new(SELECT_ENTRY);
        query.push(" WHERE 1 = 1");
        if let EntryVisibility::PublishedOrOwnedBy(code) = visibility {
            query.push(" AND (e.state = ").push_bind(EntryState::Published.as_str());
            query.push(" OR e.provider_code = ").push_bind(code).push(")");
        }
        if !filter.keyword.is_empty() {
            // instr() is a plain substring test, so quotes, % and _ need no escaping; both
            // sides are lower-cased (search_text when stored) for a case-insensitive match.
            query
                .push(" AND instr(e.search_text, ")
                .push_bind(filter.keyword.to_lowercase())
                .push(") > 0");
        }
        if !filter.classification_prefix.is_empty() {
            query.push(" AND e.classification LIKE ");
            query
                .push_bind(format!("{}%", escape_like(&filter.classification_prefix)))
                .push(" ESCAPE '\\'");
        }
        if !filter.provider_code.is_empty() {
            query.push(" AND e.provider_code = ").push_bind(&filter.provider_code);
        }
        if let Some(share_type) = filter.share_type {
            query.push(" AND e.share_type = ").push_bind(share_type.as_str());
        }
        if let Some(open_type) = filter.open_type {
            query.push(" AND e.open_type = ").push_bind(open_type.as_str());
        }
        if let Some(update_cycle) = filter.update_cycle {
            query.push(" AND e.update_cycle = ").push_bind(update_cycle.as_str());
        }
        if let Some(format) = filter.format {
            query.push(" AND e.format = ").push_bind(format.as_str());
        }
        if let Some(state) = filter.state {
            query.push(" AND e.state = ").push_bind(state.as_str());
        }
        if let Some(after) = after {
            query.push(" AND e.resource_code > ").push_bind(after);
        }
        query
            .push(" ORDER BY e.resource_code LIMIT ")
            .push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.readers).await.map_err(db_error)?;
        rows.iter().map(entry).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like(r"a%b_c\d"), r"a\%b\_c\\d");
        assert_eq!(escape_like("102"), "102");
    }

    #[test]
    fn memory_urls_are_recognised() {
        assert!(in_memory("sqlite::memory:"));
        assert!(in_memory("sqlite://:memory:"));
        assert!(in_memory("sqlite://?mode=memory&cache=shared"));
        assert!(!in_memory("sqlite:///var/lib/xinqiao/hub.db"));
        assert!(!in_memory("sqlite://hub.db"));
    }
}
