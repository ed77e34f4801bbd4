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
use xinqiao_domain::catalogue::{CatalogEntry, EntryContent, EntryFilter, ShareType, resource_code};
use xinqiao_domain::compatibility::{CompatibilityMode, DEFAULT_MODE};
use xinqiao_domain::exchange::{ChangeOp, Dataset, DatasetKind};
use xinqiao_domain::lifecycle::{EntryAction, EntryState};
use xinqiao_domain::policy::EntryVisibility;
use xinqiao_domain::schema::{RegisteredSchema, SchemaRef, Subject};
use xinqiao_domain::{Error, Result};

use crate::error::{corrupt, db_error, migrate_error, translate};
use crate::exchange::{BatchKeys, bound, check_append, check_complete, file_key, sequences, slice_chunks, to_db};
use crate::{
    BatchResult, CatalogStore, ConsumerCursor, DatasetFilter, DatasetListing, EntryChange, EntrySchemaBinding,
    EntryVersionRecord, ExchangeStore, NewBatch, NewChange, NewSchema, Registration, SchemaStore, StoredChange, Upload,
};

mod access;
mod audit;
mod catalog;
mod departments;
mod drain;
mod operations;

const READERS: u32 = 4;
/// How long a statement waits for a lock held by another process before SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The row lock a write transaction takes on a row it reads and then changes (or relies on). None on
/// SQLite: the single writer connection (and BEGIN IMMEDIATE against other processes) already lets
/// one write transaction run at a time, and SQLite has no row locks.
const FOR_UPDATE: &str = "";
const FOR_SHARE: &str = "";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The store on a SQLite file (or in memory, for tests and demos).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    /// rusqlite readers for the drain's pages, on a file (see `drain`).
    native: Option<std::sync::Arc<drain::NativeReaders>>,
}

impl SqliteStore {
    /// Opens `sqlite:///abs/path.db`, `sqlite://relative.db` or `sqlite::memory:`, creating the
    /// file and its directory if needed, and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        let store = Self::connect(url).await?;
        MIGRATOR.run(&store.writer).await.map_err(migrate_error)?;
        Ok(store)
    }

    /// Like [`SqliteStore::open`], but leaves the schema as it is (see `OperationsStore`).
    pub async fn connect(url: &str) -> Result<Self> {
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
                native: None,
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
                .before_acquire(|conn, _| Box::pin(async move { Ok(usable(conn)) }))
                .connect_with(writer_options)
                .await
                .map_err(db_error)?;
            let native = Some(drain::NativeReaders::new(options.get_filename()));
            let readers = SqlitePoolOptions::new()
                .max_connections(READERS)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .before_acquire(|conn, _| Box::pin(async move { Ok(usable(conn)) }))
                .connect_lazy_with(options);
            SqliteStore {
                writer,
                readers,
                native,
            }
        };
        Ok(store)
    }

    /// Closes every connection, letting SQLite checkpoint the WAL into the main file.
    pub async fn close(&self) {
        if let Some(native) = &self.native {
            native.close();
        }
        self.readers.close().await;
        self.writer.close().await;
    }

    /// Begins a write transaction. IMMEDIATE takes the write lock at once: a transaction that
    /// read first and wrote later could otherwise fail outright if another process wrote between.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)
    }

    /// Begins a read transaction on a reader: in WAL mode its statements all see one snapshot,
    /// for reads that take more than one query.
    async fn begin_snapshot(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        self.readers.begin().await.map_err(db_error)
    }
}

/// A pooled connection still inside a transaction is not handed out again but closed (the pool
/// opens a fresh one): after SQLite rolls a transaction back by itself — on a full disk, say —
/// the driver's own rollback fails and leaves it thinking a transaction is open, and every
/// later write on it would fail, long after the disk has room again.
fn usable(conn: &mut SqliteConnection) -> bool {
    use sqlx::Connection as _;
    let fresh = !conn.is_in_transaction();
    if !fresh {
        tracing::warn!("a database connection was left inside a transaction; it is replaced");
    }
    fresh
}

fn in_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

/// Timestamps are kept to the microsecond, as PostgreSQL keeps them, so that both backends give
/// back exactly what they stored. sqlx writes them as RFC 3339 text in UTC with as few fraction
/// digits as the value needs (none, 3, 6), one text per instant; since `+` and `.` sort before
/// the digits, that text sorts as the instants do, and comparisons in SQL are plain text ones.
fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_nanosecond(at.nanosecond() / 1_000 * 1_000).unwrap_or(at)
}

fn get<'r, T: Decode<'r, Sqlite> + Type<Sqlite>>(row: &'r SqliteRow, column: &str) -> Result<T> {
    row.try_get(column).map_err(db_error)
}

fn db_version(version: u64) -> Result<i64> {
    i64::try_from(version).map_err(|_| Error::invalid("version", "is out of range"))
}

// ---------------------------------------------------------------------------------------------
// The schema registry

/// The registry_settings row that holds the registry-wide default compatibility mode.
const DEFAULT_COMPATIBILITY_KEY: &str = "default_compatibility";

const SCHEMA_COLUMNS: &str = "subject, version, content, fingerprint, registered_by, deleted, created_at";

/// Subjects (alias `s`) with their highest live version and their number of versions: the live
/// ones, or every stored one with `include_deleted`.
fn select_subjects(include_deleted: bool) -> QueryBuilder<Sqlite> {
    let counted = if include_deleted { "" } else { " AND NOT v.deleted" };
    QueryBuilder::new(format!(
        "SELECT s.subject, s.owner, s.compatibility, \
         (SELECT MAX(v.version) FROM schema_versions v WHERE v.subject = s.subject AND NOT v.deleted) \
         AS latest_version, \
         (SELECT COUNT(*) FROM schema_versions v WHERE v.subject = s.subject{counted}) AS version_count \
         FROM schema_subjects s"
    ))
}

fn schema_version(version: i64, column: &str) -> Result<u32> {
    u32::try_from(version).map_err(|e| corrupt(column, e))
}

fn compatibility(text: &str) -> Result<CompatibilityMode> {
    CompatibilityMode::parse(text).map_err(|_| corrupt("compatibility", text))
}

fn subject(row: &SqliteRow) -> Result<Subject> {
    let mode: Option<String> = get(row, "compatibility")?;
    let latest: Option<i64> = get(row, "latest_version")?;
    let count: i64 = get(row, "version_count")?;
    Ok(Subject {
        name: get(row, "subject")?,
        owner: get(row, "owner")?,
        compatibility: mode.as_deref().map(compatibility).transpose()?,
        latest_version: latest.map(|v| schema_version(v, "latest_version")).transpose()?,
        version_count: u32::try_from(count).map_err(|e| corrupt("version_count", e))?,
    })
}

/// A version without its references, which live in a table of their own.
fn schema(row: &SqliteRow) -> Result<RegisteredSchema> {
    Ok(RegisteredSchema {
        subject: get(row, "subject")?,
        version: schema_version(get(row, "version")?, "version")?,
        content: get(row, "content")?,
        fingerprint: get(row, "fingerprint")?,
        references: Vec::new(),
        registered_by: get(row, "registered_by")?,
        deleted: get(row, "deleted")?,
        created_at: get(row, "created_at")?,
    })
}

/// ABORTED: the subject moved on between the caller's compatibility check and this write.
fn subject_changed(subject: &str) -> Error {
    Error::Aborted(format!(
        "subject {subject} changed while this registration was checked; retry"
    ))
}

/// Translates an error from writing a new version: a unique violation means a concurrent
/// registration stored the same version (or created the same subject) first.
fn registration_error(err: sqlx::Error, subject: &str) -> Error {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => subject_changed(subject),
        _ => translate(err, &format!("schema subject {subject}")),
    }
}

fn schema_not_found(subject: &str, version: u32) -> Error {
    Error::NotFound(format!("schema {subject} version {version}"))
}

/// The versions of `subject` with their references, oldest first: one version, or all of them
/// (the live ones only unless `include_deleted`).
async fn fetch_schemas(
    conn: &mut SqliteConnection,
    subject: &str,
    version: Option<u32>,
    include_deleted: bool,
) -> Result<Vec<RegisteredSchema>> {
    let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
    query
        .push(SCHEMA_COLUMNS)
        .push(" FROM schema_versions WHERE subject = ")
        .push_bind(subject);
    if let Some(version) = version {
        query.push(" AND version = ").push_bind(i64::from(version));
    }
    if !include_deleted {
        query.push(" AND NOT deleted");
    }
    query.push(" ORDER BY version");
    let rows = query.build().fetch_all(&mut *conn).await.map_err(db_error)?;
    let mut schemas = rows.iter().map(schema).collect::<Result<Vec<_>>>()?;
    if schemas.is_empty() {
        return Ok(schemas);
    }

    let mut query =
        QueryBuilder::<Sqlite>::new("SELECT version, ref_subject, ref_version FROM schema_references WHERE subject = ");
    query.push_bind(subject);
    if let Some(version) = version {
        query.push(" AND version = ").push_bind(i64::from(version));
    }
    query.push(" ORDER BY version, position");
    let rows = query.build().fetch_all(&mut *conn).await.map_err(db_error)?;
    for row in &rows {
        let version = schema_version(get(row, "version")?, "schema_references.version")?;
        let reference = SchemaRef {
            subject: get(row, "ref_subject")?,
            version: schema_version(get(row, "ref_version")?, "schema_references.ref_version")?,
        };
        // Both lists are ordered by version; references of versions not asked for are skipped.
        if let Ok(at) = schemas.binary_search_by_key(&version, |s| s.version) {
            schemas[at].references.push(reference);
        }
    }
    Ok(schemas)
}

async fn fetch_schema(conn: &mut SqliteConnection, subject: &str, version: u32) -> Result<Option<RegisteredSchema>> {
    Ok(fetch_schemas(conn, subject, Some(version), true).await?.pop())
}

async fn fetch_subject(conn: &mut SqliteConnection, name: &str) -> Result<Option<Subject>> {
    let mut query = select_subjects(false);
    query.push(" WHERE s.subject = ").push_bind(name);
    let row = query.build().fetch_optional(conn).await.map_err(db_error)?;
    row.as_ref().map(subject).transpose()
}

/// Whether a version exists and is live; `None` if it does not exist.
async fn version_live(conn: &mut SqliteConnection, subject: &str, version: u32) -> Result<Option<bool>> {
    let deleted: Option<bool> =
        sqlx::query_scalar("SELECT deleted FROM schema_versions WHERE subject = ? AND version = ?")
            .bind(subject)
            .bind(i64::from(version))
            .fetch_optional(conn)
            .await
            .map_err(db_error)?;
    Ok(deleted.map(|deleted| !deleted))
}

#[async_trait]
impl SchemaStore for SqliteStore {
    /// In one write transaction, in this order: (1) a live version of the subject with the same
    /// fingerprint is returned as `Existing`, with nothing written, even when `after_version` is
    /// stale; (2) the subject's highest stored version (deleted ones included) must equal
    /// `after_version`, else ABORTED; (3) every reference must name a live version, else
    /// NOT_FOUND naming it; (4) the subject is created if new (owned by `registered_by`) and the
    /// version stored with its references.
    ///
    /// The new version is one past the highest ever handed out in the subject. That is
    /// `after_version + 1` unless the subject's highest version was deleted for good, whose
    /// number is not given out again.
    async fn register_schema(&self, new: &NewSchema<'_>) -> Result<Registration> {
        let at = stored_time(new.at);
        let mut tx = self.begin_write().await?;

        let same: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM schema_versions WHERE subject = ? AND fingerprint = ? AND NOT deleted \
             ORDER BY version LIMIT 1",
        )
        .bind(new.subject)
        .bind(new.fingerprint)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if let Some(version) = same {
            let version = schema_version(version, "version")?;
            let existing = fetch_schema(&mut tx, new.subject, version)
                .await?
                .ok_or_else(|| Error::Internal(format!("schema {} version {version} vanished", new.subject)))?;
            return Ok(Registration::Existing(existing));
        }

        let last_version: Option<i64> =
            sqlx::query_scalar("SELECT last_version FROM schema_subjects WHERE subject = ?")
                .bind(new.subject)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        let highest: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_versions WHERE subject = ?")
                .bind(new.subject)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        if highest != i64::from(new.after_version) {
            return Err(subject_changed(new.subject));
        }

        for reference in new.references {
            match version_live(&mut tx, &reference.subject, reference.version).await? {
                Some(true) => {}
                Some(false) => {
                    return Err(Error::NotFound(format!(
                        "referenced schema {} version {} (it is deleted)",
                        reference.subject, reference.version
                    )));
                }
                None => {
                    return Err(Error::NotFound(format!(
                        "referenced schema {} version {}",
                        reference.subject, reference.version
                    )));
                }
            }
        }

        let version = last_version.unwrap_or(0) + 1;
        let number = u32::try_from(version)
            .map_err(|_| Error::FailedPrecondition(format!("subject {} has no version numbers left", new.subject)))?;
        if last_version.is_some() {
            sqlx::query("UPDATE schema_subjects SET last_version = ? WHERE subject = ?")
                .bind(version)
                .bind(new.subject)
                .execute(&mut *tx)
                .await
                .map_err(|e| registration_error(e, new.subject))?;
        } else {
            sqlx::query(
                "INSERT INTO schema_subjects (subject, owner, compatibility, last_version, created_at) \
                 VALUES (?, ?, NULL, ?, ?)",
            )
            .bind(new.subject)
            .bind(new.registered_by)
            .bind(version)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(|e| registration_error(e, new.subject))?;
        }
        sqlx::query(
            "INSERT INTO schema_versions (subject, version, content, fingerprint, registered_by, deleted, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(new.subject)
        .bind(version)
        .bind(new.content)
        .bind(new.fingerprint)
        .bind(new.registered_by)
        .bind(false)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| registration_error(e, new.subject))?;
        for (position, reference) in new.references.iter().enumerate() {
            sqlx::query(
                "INSERT INTO schema_references (subject, version, position, ref_subject, ref_version) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(new.subject)
            .bind(version)
            .bind(i64::try_from(position).map_err(|_| Error::invalid("references", "are too many"))?)
            .bind(&reference.subject)
            .bind(i64::from(reference.version))
            .execute(&mut *tx)
            .await
            .map_err(|e| registration_error(e, new.subject))?;
        }

        let created = fetch_schema(&mut tx, new.subject, number).await?.ok_or_else(|| {
            Error::Internal(format!(
                "schema {} version {number} vanished while being registered",
                new.subject
            ))
        })?;
        tx.commit().await.map_err(db_error)?;
        Ok(Registration::Created(created))
    }

    /// Any stored subject, also one whose versions are all deleted; `version_count` counts the
    /// live versions.
    async fn get_subject(&self, subject: &str) -> Result<Option<Subject>> {
        let mut conn = self.readers.acquire().await.map_err(db_error)?;
        fetch_subject(&mut conn, subject).await
    }

    /// `latest_version` is the highest live version (`None` if there is none); `version_count`
    /// counts the live versions, or every stored one with `include_deleted`.
    async fn list_subjects(&self, after: Option<&str>, limit: u32, include_deleted: bool) -> Result<Vec<Subject>> {
        let mut query = select_subjects(include_deleted);
        query.push(" WHERE 1 = 1");
        if !include_deleted {
            query.push(" AND EXISTS (SELECT 1 FROM schema_versions v WHERE v.subject = s.subject AND NOT v.deleted)");
        }
        if let Some(after) = after {
            query.push(" AND s.subject > ").push_bind(after);
        }
        query.push(" ORDER BY s.subject LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.readers).await.map_err(db_error)?;
        rows.iter().map(subject).collect()
    }

    async fn get_schema(&self, subject: &str, version: u32) -> Result<Option<RegisteredSchema>> {
        // One read transaction: the version and its references from the same snapshot.
        let mut tx = self.readers.begin().await.map_err(db_error)?;
        fetch_schema(&mut tx, subject, version).await
    }

    async fn latest_schema(&self, subject: &str) -> Result<Option<RegisteredSchema>> {
        let mut tx = self.readers.begin().await.map_err(db_error)?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM schema_versions WHERE subject = ? AND NOT deleted")
                .bind(subject)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        match latest {
            Some(version) => fetch_schema(&mut tx, subject, schema_version(version, "version")?).await,
            None => Ok(None),
        }
    }

    async fn list_schema_versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<RegisteredSchema>> {
        let mut tx = self.readers.begin().await.map_err(db_error)?;
        fetch_schemas(&mut tx, subject, None, include_deleted).await
    }

    async fn set_schema_deleted(&self, subject: &str, version: u32, deleted: bool) -> Result<RegisteredSchema> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE schema_versions SET deleted = ? WHERE subject = ? AND version = ?")
            .bind(deleted)
            .bind(subject)
            .bind(i64::from(version))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            return Err(schema_not_found(subject, version));
        }
        let schema = fetch_schema(&mut tx, subject, version)
            .await?
            .ok_or_else(|| schema_not_found(subject, version))?;
        tx.commit().await.map_err(db_error)?;
        Ok(schema)
    }

    /// Refused (FAILED_PRECONDITION) unless the version is soft-deleted, and while a catalogue
    /// entry is bound to it or another version references it; the message names the first such
    /// entry or version. Removes the version's own references with it. The subject stays, with
    /// its owner, its mode and its count of versions handed out.
    async fn delete_schema_permanently(&self, subject: &str, version: u32) -> Result<()> {
        let mut tx = self.begin_write().await?;
        match version_live(&mut tx, subject, version).await? {
            None => return Err(schema_not_found(subject, version)),
            Some(true) => {
                return Err(Error::FailedPrecondition(format!(
                    "schema {subject} version {version} is not deleted; delete it (soft) before deleting it for good"
                )));
            }
            Some(false) => {}
        }

        let bound: Option<String> = sqlx::query_scalar(
            "SELECT resource_code FROM entry_schema_bindings WHERE subject = ? AND version = ? \
             ORDER BY resource_code LIMIT 1",
        )
        .bind(subject)
        .bind(i64::from(version))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if let Some(resource_code) = bound {
            return Err(Error::FailedPrecondition(format!(
                "schema {subject} version {version} describes catalogue entry {resource_code}; bind the entry to \
                 another version first"
            )));
        }

        let used_by: Option<String> = sqlx::query_scalar(
            "SELECT id FROM datasets WHERE schema_subject = ? AND schema_version = ? ORDER BY id LIMIT 1",
        )
        .bind(subject)
        .bind(i64::from(version))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if let Some(dataset) = used_by {
            return Err(Error::FailedPrecondition(format!(
                "schema {subject} version {version} is the schema of dataset {dataset}; upgrade the dataset first"
            )));
        }

        let referrer = sqlx::query(
            "SELECT subject, version FROM schema_references WHERE ref_subject = ? AND ref_version = ? \
             ORDER BY subject, version LIMIT 1",
        )
        .bind(subject)
        .bind(i64::from(version))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if let Some(row) = referrer {
            let by: String = get(&row, "subject")?;
            let by_version: i64 = get(&row, "version")?;
            return Err(Error::FailedPrecondition(format!(
                "schema {subject} version {version} is referenced by schema {by} version {by_version}"
            )));
        }

        sqlx::query("DELETE FROM schema_references WHERE subject = ? AND version = ?")
            .bind(subject)
            .bind(i64::from(version))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query("DELETE FROM schema_versions WHERE subject = ? AND version = ?")
            .bind(subject)
            .bind(i64::from(version))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }

    async fn default_compatibility(&self) -> Result<CompatibilityMode> {
        let value: Option<String> = sqlx::query_scalar("SELECT value FROM registry_settings WHERE key = ?")
            .bind(DEFAULT_COMPATIBILITY_KEY)
            .fetch_optional(&self.readers)
            .await
            .map_err(db_error)?;
        match value {
            Some(mode) => compatibility(&mode),
            None => Ok(DEFAULT_MODE),
        }
    }

    async fn set_default_compatibility(&self, mode: CompatibilityMode) -> Result<()> {
        sqlx::query(
            "INSERT INTO registry_settings (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(DEFAULT_COMPATIBILITY_KEY)
        .bind(mode.as_str())
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn set_subject_compatibility(&self, subject: &str, mode: Option<CompatibilityMode>) -> Result<Subject> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE schema_subjects SET compatibility = ? WHERE subject = ?")
            .bind(mode.map(|m| m.as_str()))
            .bind(subject)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            return Err(Error::NotFound(format!("schema subject {subject}")));
        }
        let changed = fetch_subject(&mut tx, subject)
            .await?
            .ok_or_else(|| Error::NotFound(format!("schema subject {subject}")))?;
        tx.commit().await.map_err(db_error)?;
        Ok(changed)
    }

    /// NOT_FOUND if the entry does not exist, or the version does not exist or is deleted.
    async fn bind_entry_schema(&self, binding: &EntrySchemaBinding) -> Result<()> {
        let schema = &binding.schema;
        let mut tx = self.begin_write().await?;
        let entry: Option<i64> = sqlx::query_scalar("SELECT 1 FROM catalog_entries WHERE resource_code = ?")
            .bind(&binding.resource_code)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if entry.is_none() {
            return Err(Error::NotFound(format!("catalogue entry {}", binding.resource_code)));
        }
        match version_live(&mut tx, &schema.subject, schema.version).await? {
            Some(true) => {}
            Some(false) => {
                return Err(Error::NotFound(format!(
                    "schema {} version {} (it is deleted)",
                    schema.subject, schema.version
                )));
            }
            None => return Err(schema_not_found(&schema.subject, schema.version)),
        }
        sqlx::query(
            "INSERT INTO entry_schema_bindings (resource_code, subject, version, bound_by, bound_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (resource_code) DO UPDATE SET subject = excluded.subject, \
             version = excluded.version, bound_by = excluded.bound_by, bound_at = excluded.bound_at",
        )
        .bind(&binding.resource_code)
        .bind(&schema.subject)
        .bind(i64::from(schema.version))
        .bind(&binding.bound_by)
        .bind(stored_time(binding.at))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            translate(
                e,
                &format!("the schema binding of catalogue entry {}", binding.resource_code),
            )
        })?;
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }

    async fn entry_schema(&self, resource_code: &str) -> Result<Option<EntrySchemaBinding>> {
        let row = sqlx::query(
            "SELECT resource_code, subject, version, bound_by, bound_at FROM entry_schema_bindings \
             WHERE resource_code = ?",
        )
        .bind(resource_code)
        .fetch_optional(&self.readers)
        .await
        .map_err(db_error)?;
        row.as_ref()
            .map(|row| {
                Ok(EntrySchemaBinding {
                    resource_code: get(row, "resource_code")?,
                    schema: SchemaRef {
                        subject: get(row, "subject")?,
                        version: schema_version(get(row, "version")?, "version")?,
                    },
                    bound_by: get(row, "bound_by")?,
                    at: get(row, "bound_at")?,
                })
            })
            .transpose()
    }
}

// ---------------------------------------------------------------------------------------------
// The exchange

const DATASET_COLUMNS: &str = "ds.id, ds.provider_code, ds.kind, ds.schema_subject, ds.schema_version, ds.key, \
     ds.record_count, ds.last_sequence, ds.last_published_at, ds.created_at";

const CHANGE_COLUMNS: &str = "c.sequence, c.op, c.key, c.record, c.published_at";

const UPLOAD_COLUMNS: &str =
    "u.id, u.dataset, u.file_name, u.size, u.sha256, u.received, u.sequence, u.started_by, u.started_at";

const CONSUMER_COLUMNS: &str = "dataset, department, consumer, acknowledged, updated_at";

/// At most this many changes per INSERT (6 variables each, far below SQLite's limit of 32766).
/// A batch is split into powers of two, so that only a few distinct statements are prepared and
/// kept in the statement cache whatever the batch sizes.
const MAX_INSERT_ROWS: usize = 512;

fn stored_u64(value: i64, column: &str) -> Result<u64> {
    u64::try_from(value).map_err(|e| corrupt(column, e))
}

fn dataset(row: &SqliteRow) -> Result<Dataset> {
    let kind: String = get(row, "kind")?;
    let subject: Option<String> = get(row, "schema_subject")?;
    let version: Option<i64> = get(row, "schema_version")?;
    let key: String = get(row, "key")?;
    Ok(Dataset {
        id: get(row, "id")?,
        provider_code: get(row, "provider_code")?,
        kind: DatasetKind::parse(&kind).ok_or_else(|| corrupt("datasets.kind", &kind))?,
        schema: match (subject, version) {
            (Some(subject), Some(version)) => Some(SchemaRef {
                subject,
                version: schema_version(version, "datasets.schema_version")?,
            }),
            _ => None,
        },
        key: serde_json::from_str(&key).map_err(|e| corrupt("datasets.key", e))?,
        record_count: stored_u64(get(row, "record_count")?, "datasets.record_count")?,
        last_sequence: stored_u64(get(row, "last_sequence")?, "datasets.last_sequence")?,
        last_published_at: get(row, "last_published_at")?,
        created_at: get(row, "created_at")?,
    })
}

fn listing(row: &SqliteRow) -> Result<DatasetListing> {
    let share_type: String = get(row, "share_type")?;
    let state: String = get(row, "entry_state")?;
    Ok(DatasetListing {
        dataset: dataset(row)?,
        name: get(row, "name")?,
        provider_name: get(row, "provider_name")?,
        share_type: ShareType::parse(&share_type).ok_or_else(|| corrupt("share_type", &share_type))?,
        entry_state: EntryState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
    })
}

fn stored_change(row: &SqliteRow) -> Result<StoredChange> {
    let op: String = get(row, "op")?;
    Ok(StoredChange {
        sequence: stored_u64(get(row, "sequence")?, "changes.sequence")?,
        op: ChangeOp::parse(&op).ok_or_else(|| corrupt("changes.op", &op))?,
        key: get(row, "key")?,
        record: get(row, "record")?,
        published_at: get(row, "published_at")?,
    })
}

fn upload(row: &SqliteRow) -> Result<Upload> {
    let sequence: Option<i64> = get(row, "sequence")?;
    Ok(Upload {
        id: get(row, "id")?,
        dataset: get(row, "dataset")?,
        file_name: get(row, "file_name")?,
        size: stored_u64(get(row, "size")?, "uploads.size")?,
        sha256: get(row, "sha256")?,
        received: stored_u64(get(row, "received")?, "uploads.received")?,
        sequence: sequence.map(|s| stored_u64(s, "uploads.sequence")).transpose()?,
        started_by: get(row, "started_by")?,
        started_at: get(row, "started_at")?,
    })
}

fn cursor(row: &SqliteRow) -> Result<ConsumerCursor> {
    Ok(ConsumerCursor {
        dataset: get(row, "dataset")?,
        department: get(row, "department")?,
        consumer: get(row, "consumer")?,
        acknowledged: stored_u64(get(row, "acknowledged")?, "consumers.acknowledged")?,
        updated_at: get(row, "updated_at")?,
    })
}

fn dataset_not_found(id: &str) -> Error {
    Error::NotFound(format!("dataset {id}"))
}

fn upload_not_found(id: &str) -> Error {
    Error::NotFound(format!("upload {id}"))
}

async fn fetch_dataset(conn: &mut SqliteConnection, id: &str) -> Result<Option<Dataset>> {
    let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
    query
        .push(DATASET_COLUMNS)
        .push(" FROM datasets ds WHERE ds.id = ")
        .push_bind(id);
    let row = query.build().fetch_optional(conn).await.map_err(db_error)?;
    row.as_ref().map(dataset).transpose()
}

async fn fetch_upload(conn: &mut SqliteConnection, id: &str) -> Result<Option<Upload>> {
    let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
    query
        .push(UPLOAD_COLUMNS)
        .push(" FROM uploads u WHERE u.id = ")
        .push_bind(id);
    let row = query.build().fetch_optional(conn).await.map_err(db_error)?;
    row.as_ref().map(upload).transpose()
}

/// The result a batch committed with its idempotency key, if one was.
async fn committed_batch(conn: &mut SqliteConnection, dataset: &str, key: &str) -> Result<Option<BatchResult>> {
    let row = sqlx::query(
        "SELECT accepted, rejected, first_sequence, last_sequence FROM batches \
         WHERE dataset = ? AND idempotency_key = ?",
    )
    .bind(dataset)
    .bind(key)
    .fetch_optional(conn)
    .await
    .map_err(db_error)?;
    row.map(|row| {
        let accepted: i64 = get(&row, "accepted")?;
        Ok(BatchResult {
            accepted: u32::try_from(accepted).map_err(|e| corrupt("batches.accepted", e))?,
            rejected: get(&row, "rejected")?,
            first_sequence: stored_u64(get(&row, "first_sequence")?, "batches.first_sequence")?,
            last_sequence: stored_u64(get(&row, "last_sequence")?, "batches.last_sequence")?,
            replayed: true,
        })
    })
    .transpose()
}

/// A dataset's last sequence number and record count, as a writer finds them.
struct Head {
    last_sequence: i64,
    record_count: i64,
}

async fn dataset_head(conn: &mut SqliteConnection, id: &str) -> Result<Head> {
    let row = sqlx::query("SELECT last_sequence, record_count FROM datasets WHERE id = ?")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| dataset_not_found(id))?;
    Ok(Head {
        last_sequence: get(&row, "last_sequence")?,
        record_count: get(&row, "record_count")?,
    })
}

/// Appends `changes` to a dataset's log after `head` and moves the dataset on: its last
/// sequence, record count and last publish time. Returns the first and last sequence numbers
/// given (0 and 0 for no change). Runs inside the caller's write transaction, which the single
/// writer connection makes the only one: nobody else numbers changes meanwhile.
async fn append_changes(
    conn: &mut SqliteConnection,
    dataset: &str,
    head: Head,
    changes: &[NewChange],
    at: DateTime<Utc>,
) -> Result<(i64, i64)> {
    let (first, last) = sequences(head.last_sequence, changes.len())?;
    if changes.is_empty() {
        return Ok((first, last));
    }

    // How many of the batch's keys are present now: one lookup of each key's latest change,
    // through the (dataset, key, sequence) index.
    let keys = BatchKeys::of(changes);
    let present_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM json_each(?) AS k WHERE (SELECT c.op FROM changes c \
         WHERE c.dataset = ? AND c.key = k.value ORDER BY c.sequence DESC LIMIT 1) = 'upsert'",
    )
    .bind(keys.json())
    .bind(dataset)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;

    let mut sequence = first;
    let mut rest = changes;
    while !rest.is_empty() {
        let rows = MAX_INSERT_ROWS.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(rows);
        let mut query =
            QueryBuilder::<Sqlite>::new("INSERT INTO changes (dataset, sequence, op, key, record, published_at) ");
        query.push_values(chunk.iter().zip(sequence..), |mut row, (change, sequence)| {
            row.push_bind(dataset)
                .push_bind(sequence)
                .push_bind(change.op.as_str())
                .push_bind(&change.key)
                .push_bind(change.record.as_deref())
                .push_bind(at);
        });
        query
            .build()
            .execute(&mut *conn)
            .await
            .map_err(|e| translate(e, &format!("change {sequence} of dataset {dataset}")))?;
        sequence += rows as i64;
        rest = tail;
    }

    sqlx::query("UPDATE datasets SET last_sequence = ?, record_count = ?, last_published_at = ? WHERE id = ?")
        .bind(last)
        .bind(keys.record_count(head.record_count, present_before))
        .bind(at)
        .bind(dataset)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok((first, last))
}

#[async_trait]
impl ExchangeStore for SqliteStore {
    /// NOT_FOUND if the catalogue entry does not exist. Counts start at 0, whatever `dataset`
    /// says.
    async fn create_dataset(&self, new: &Dataset) -> Result<Dataset> {
        let key = serde_json::to_string(&new.key).map_err(|e| Error::Internal(format!("encoding the key: {e}")))?;
        let mut tx = self.begin_write().await?;
        let entry: Option<i64> = sqlx::query_scalar("SELECT 1 FROM catalog_entries WHERE resource_code = ?")
            .bind(&new.id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if entry.is_none() {
            return Err(Error::NotFound(format!("catalogue entry {}", new.id)));
        }
        sqlx::query(
            "INSERT INTO datasets (id, provider_code, kind, schema_subject, schema_version, key, record_count, \
             last_sequence, last_published_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, 0, NULL, ?)",
        )
        .bind(&new.id)
        .bind(&new.provider_code)
        .bind(new.kind.as_str())
        .bind(new.schema.as_ref().map(|s| s.subject.as_str()))
        .bind(new.schema.as_ref().map(|s| i64::from(s.version)))
        .bind(key)
        .bind(stored_time(new.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| translate(e, &format!("dataset {}", new.id)))?;
        let created = fetch_dataset(&mut tx, &new.id)
            .await?
            .ok_or_else(|| Error::Internal(format!("dataset {} vanished while being created", new.id)))?;
        tx.commit().await.map_err(db_error)?;
        Ok(created)
    }

    async fn get_dataset(&self, id: &str) -> Result<Option<Dataset>> {
        let mut conn = self.readers.acquire().await.map_err(db_error)?;
        fetch_dataset(&mut conn, id).await
    }

    /// NOT_FOUND for an unknown dataset; FAILED_PRECONDITION for a file dataset, or a schema of
    /// another subject.
    async fn set_dataset_schema(&self, id: &str, schema: &SchemaRef) -> Result<Dataset> {
        let mut tx = self.begin_write().await?;
        let current = fetch_dataset(&mut tx, id).await?.ok_or_else(|| dataset_not_found(id))?;
        match &current.schema {
            None => {
                return Err(Error::FailedPrecondition(format!(
                    "{id} is a file dataset: it has no schema"
                )));
            }
            Some(old) if old.subject != schema.subject => {
                return Err(Error::FailedPrecondition(format!(
                    "dataset {id} follows schema subject {}, not {}",
                    old.subject, schema.subject
                )));
            }
            Some(_) => {}
        }
        sqlx::query("UPDATE datasets SET schema_version = ? WHERE id = ?")
            .bind(i64::from(schema.version))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let updated = fetch_dataset(&mut tx, id).await?.ok_or_else(|| dataset_not_found(id))?;
        tx.commit().await.map_err(db_error)?;
        Ok(updated)
    }

    async fn list_datasets(
        &self,
        filter: &DatasetFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DatasetListing>> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query.push(DATASET_COLUMNS).push(
            ", e.name, d.name AS provider_name, e.share_type, e.state AS entry_state FROM datasets ds \
             JOIN catalog_entries e ON e.resource_code = ds.id JOIN departments d ON d.code = e.provider_code \
             WHERE 1 = 1",
        );
        if !filter.keyword.is_empty() {
            // instr() is a plain substring test: quotes, % and _ match themselves.
            query
                .push(" AND (instr(lower(e.name), lower(")
                .push_bind(&filter.keyword);
            query
                .push(")) > 0 OR instr(lower(ds.id), lower(")
                .push_bind(&filter.keyword);
            query.push(")) > 0)");
        }
        if !filter.provider_code.is_empty() {
            query.push(" AND ds.provider_code = ").push_bind(&filter.provider_code);
        }
        if let Some(kind) = filter.kind {
            query.push(" AND ds.kind = ").push_bind(kind.as_str());
        }
        if let Some(share_type) = filter.share_type {
            query.push(" AND e.share_type = ").push_bind(share_type.as_str());
        }
        if let Some(excluded) = &filter.exclude_provider {
            query.push(" AND ds.provider_code <> ").push_bind(excluded);
        }
        if let Some(provider) = &filter.published_or_provided_by {
            query.push(" AND (e.state = ").push_bind(EntryState::Published.as_str());
            query.push(" OR ds.provider_code = ").push_bind(provider).push(")");
        }
        if let Some((grantee, at)) = &filter.granted_to {
            // Times are stored in one canonical text form (see `stored_time`), which sorts as
            // the instants do.
            query.push(" AND EXISTS (SELECT 1 FROM access_grants g WHERE g.dataset = ds.id AND g.grantee_code = ");
            query.push_bind(grantee);
            // Active at that moment: given by then, not yet revoked then, not yet expired.
            query
                .push(" AND g.granted_at <= ")
                .push_bind(stored_time(*at))
                .push(" AND (g.revoked_at IS NULL OR g.revoked_at > ")
                .push_bind(stored_time(*at))
                .push(") AND g.expires_at > ")
                .push_bind(stored_time(*at))
                .push(")");
        }
        if let Some(after) = after {
            query.push(" AND ds.id > ").push_bind(after);
        }
        query.push(" ORDER BY ds.id LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.readers).await.map_err(db_error)?;
        rows.iter().map(listing).collect()
    }

    /// One write transaction: the idempotency key is looked up first (a replay writes nothing),
    /// then the changes are numbered after the dataset's last sequence and inserted, many rows
    /// per statement.
    async fn publish_batch(&self, batch: &NewBatch<'_>) -> Result<BatchResult> {
        let at = stored_time(batch.at);
        let accepted = u32::try_from(batch.changes.len()).map_err(|_| Error::invalid("changes", "are too many"))?;
        let mut tx = self.begin_write().await?;
        if let Some(replayed) = committed_batch(&mut tx, batch.dataset, batch.idempotency_key).await? {
            return Ok(replayed);
        }
        let head = dataset_head(&mut tx, batch.dataset).await?;
        let (first, last) = append_changes(&mut tx, batch.dataset, head, batch.changes, at).await?;
        sqlx::query(
            "INSERT INTO batches (dataset, idempotency_key, accepted, rejected, first_sequence, last_sequence, \
             committed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(batch.dataset)
        .bind(batch.idempotency_key)
        .bind(i64::from(accepted))
        .bind(batch.rejected)
        .bind(first)
        .bind(last)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            translate(
                e,
                &format!("batch {} of dataset {}", batch.idempotency_key, batch.dataset),
            )
        })?;
        if let Some(audit) = &batch.audit {
            let event = crate::audit::batch_event(audit.event, accepted, first, last);
            self::audit::append_in(&mut tx, &[event], &audit.linker).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(BatchResult {
            accepted,
            rejected: batch.rejected.to_string(),
            first_sequence: stored_u64(first, "first_sequence")?,
            last_sequence: stored_u64(last, "last_sequence")?,
            replayed: false,
        })
    }

    async fn fetch_changes(&self, dataset: &str, after: u64, limit: u32) -> Result<(Vec<StoredChange>, u64)> {
        self.changes_after(dataset, after, limit).await
    }

    /// Walks the (dataset, key, sequence) index in key order, keeping each key's latest change up
    /// to `as_of` when it is an upsert. An unknown dataset has no changes.
    async fn snapshot_page(
        &self,
        dataset: &str,
        as_of: u64,
        after_key: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredChange>> {
        let as_of = bound(as_of);
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query
            .push(CHANGE_COLUMNS)
            .push(" FROM changes c INDEXED BY changes_key WHERE c.dataset = ")
            .push_bind(dataset);
        if let Some(after) = after_key {
            query.push(" AND c.key > ").push_bind(after);
        }
        query.push(" AND c.sequence <= ").push_bind(as_of);
        query.push(" AND c.op = ").push_bind(ChangeOp::Upsert.as_str());
        query.push(
            " AND NOT EXISTS (SELECT 1 FROM changes n WHERE n.dataset = c.dataset AND n.key = c.key \
             AND n.sequence > c.sequence AND n.sequence <= ",
        );
        query.push_bind(as_of).push(")");
        query.push(" ORDER BY c.key LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.readers).await.map_err(db_error)?;
        rows.iter().map(stored_change).collect()
    }

    async fn dataset_heads(&self, ids: &[String]) -> Result<Vec<(String, u64)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(ids).map_err(|e| Error::Internal(format!("encoding dataset ids: {e}")))?;
        let rows = sqlx::query(
            "SELECT id, last_sequence FROM datasets WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
        )
        .bind(ids)
        .fetch_all(&self.readers)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok((
                    get(row, "id")?,
                    stored_u64(get(row, "last_sequence")?, "datasets.last_sequence")?,
                ))
            })
            .collect()
    }

    /// One hub per SQLite file: there is nobody else to hear from.
    async fn listen_changes(&self, _sink: tokio::sync::mpsc::Sender<(String, u64)>) -> Result<bool> {
        Ok(false)
    }

    /// `updated_at` is when the position last moved. NOT_FOUND for an unknown dataset.
    async fn acknowledge(&self, cursor: &ConsumerCursor) -> Result<ConsumerCursor> {
        let mut tx = self.begin_write().await?;
        dataset_head(&mut tx, &cursor.dataset).await?;
        let row = sqlx::query(
            "INSERT INTO consumers (dataset, department, consumer, acknowledged, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (dataset, department, consumer) DO UPDATE SET \
             updated_at = CASE WHEN excluded.acknowledged > consumers.acknowledged THEN excluded.updated_at \
             ELSE consumers.updated_at END, \
             acknowledged = max(consumers.acknowledged, excluded.acknowledged) \
             RETURNING dataset, department, consumer, acknowledged, updated_at",
        )
        .bind(&cursor.dataset)
        .bind(&cursor.department)
        .bind(&cursor.consumer)
        .bind(to_db(cursor.acknowledged, "acknowledged")?)
        .bind(stored_time(cursor.updated_at))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| translate(e, &format!("consumer {}", cursor.consumer)))?;
        let saved = self::cursor(&row)?;
        tx.commit().await.map_err(db_error)?;
        Ok(saved)
    }

    async fn get_consumer(&self, dataset: &str, department: &str, consumer: &str) -> Result<Option<ConsumerCursor>> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query
            .push(CONSUMER_COLUMNS)
            .push(" FROM consumers WHERE dataset = ")
            .push_bind(dataset);
        query.push(" AND department = ").push_bind(department);
        query.push(" AND consumer = ").push_bind(consumer);
        let row = query.build().fetch_optional(&self.readers).await.map_err(db_error)?;
        row.as_ref().map(cursor).transpose()
    }

    /// Stores the upload with nothing received yet. NOT_FOUND for an unknown dataset,
    /// FAILED_PRECONDITION for a table dataset, ALREADY_EXISTS if the id is taken.
    async fn start_upload(&self, new: &Upload) -> Result<Upload> {
        let size = to_db(new.size, "size")?;
        let mut tx = self.begin_write().await?;
        let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM datasets WHERE id = ?")
            .bind(&new.dataset)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        match kind.as_deref().map(DatasetKind::parse) {
            None => return Err(dataset_not_found(&new.dataset)),
            Some(Some(DatasetKind::File)) => {}
            Some(_) => {
                return Err(Error::FailedPrecondition(format!(
                    "{} is a table dataset: publish records to it",
                    new.dataset
                )));
            }
        }
        sqlx::query(
            "INSERT INTO uploads (id, dataset, file_name, size, sha256, received, sequence, started_by, started_at) \
             VALUES (?, ?, ?, ?, ?, 0, NULL, ?, ?)",
        )
        .bind(&new.id)
        .bind(&new.dataset)
        .bind(&new.file_name)
        .bind(size)
        .bind(&new.sha256)
        .bind(&new.started_by)
        .bind(stored_time(new.started_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| translate(e, &format!("upload {}", new.id)))?;
        let started = fetch_upload(&mut tx, &new.id)
            .await?
            .ok_or_else(|| upload_not_found(&new.id))?;
        tx.commit().await.map_err(db_error)?;
        Ok(started)
    }

    async fn get_upload(&self, id: &str) -> Result<Option<Upload>> {
        let mut conn = self.readers.acquire().await.map_err(db_error)?;
        fetch_upload(&mut conn, id).await
    }

    /// NOT_FOUND for an unknown upload; FAILED_PRECONDITION once it is complete or when `offset`
    /// is not the bytes received; RESOURCE_EXHAUSTED past the declared size. No bytes: nothing
    /// changes.
    async fn append_upload(&self, id: &str, offset: u64, data: &[u8]) -> Result<Upload> {
        let mut tx = self.begin_write().await?;
        let current = fetch_upload(&mut tx, id).await?.ok_or_else(|| upload_not_found(id))?;
        let received = check_append(&current, offset, data)?;
        if data.is_empty() {
            return Ok(current);
        }
        sqlx::query("INSERT INTO upload_chunks (upload_id, chunk_offset, data) VALUES (?, ?, ?)")
            .bind(id)
            .bind(to_db(offset, "offset")?)
            .bind(data)
            .execute(&mut *tx)
            .await
            .map_err(|e| translate(e, &format!("the bytes at offset {offset} of upload {id}")))?;
        sqlx::query("UPDATE uploads SET received = ? WHERE id = ?")
            .bind(to_db(received, "received")?)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let appended = fetch_upload(&mut tx, id).await?.ok_or_else(|| upload_not_found(id))?;
        tx.commit().await.map_err(db_error)?;
        Ok(appended)
    }

    /// Empty at or past the bytes received. NOT_FOUND for an unknown upload.
    async fn read_upload(&self, id: &str, offset: u64, max: u32) -> Result<Vec<u8>> {
        let mut tx = self.readers.begin().await.map_err(db_error)?;
        let found = fetch_upload(&mut tx, id).await?.ok_or_else(|| upload_not_found(id))?;
        let end = found.received.min(offset.saturating_add(u64::from(max)));
        if offset >= end {
            return Ok(Vec::new());
        }
        // The chunk that holds `offset` and those after it, up to `end`.
        let rows = sqlx::query(
            "SELECT chunk_offset, data FROM upload_chunks WHERE upload_id = ?1 AND chunk_offset < ?3 \
             AND chunk_offset >= (SELECT max(chunk_offset) FROM upload_chunks WHERE upload_id = ?1 \
             AND chunk_offset <= ?2) ORDER BY chunk_offset",
        )
        .bind(id)
        .bind(to_db(offset, "offset")?)
        .bind(to_db(end, "offset")?)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let chunks = rows
            .iter()
            .map(|row| {
                Ok((
                    stored_u64(get(row, "chunk_offset")?, "upload_chunks.chunk_offset")?,
                    get(row, "data")?,
                ))
            })
            .collect::<Result<Vec<(u64, Vec<u8>)>>>()?;
        slice_chunks(&chunks, offset, end)
    }

    /// Idempotent: a complete upload is returned as it is. FAILED_PRECONDITION until every
    /// declared byte is received.
    async fn complete_upload(&self, id: &str, metadata: &str, at: DateTime<Utc>) -> Result<Upload> {
        let at = stored_time(at);
        let mut tx = self.begin_write().await?;
        let current = fetch_upload(&mut tx, id).await?.ok_or_else(|| upload_not_found(id))?;
        if current.sequence.is_some() {
            return Ok(current);
        }
        check_complete(&current)?;
        let head = dataset_head(&mut tx, &current.dataset).await?;
        let change = NewChange {
            op: ChangeOp::Upsert,
            key: file_key(&current.file_name),
            record: Some(metadata.to_string()),
        };
        let (sequence, _) = append_changes(&mut tx, &current.dataset, head, std::slice::from_ref(&change), at).await?;
        sqlx::query("UPDATE uploads SET sequence = ? WHERE id = ?")
            .bind(sequence)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let completed = fetch_upload(&mut tx, id).await?.ok_or_else(|| upload_not_found(id))?;
        tx.commit().await.map_err(db_error)?;
        Ok(completed)
    }

    /// The upload whose change is the file's latest, unless that change deleted the file.
    async fn current_file(&self, dataset: &str, file_name: &str) -> Result<Option<Upload>> {
        let key = file_key(file_name);
        let mut query = QueryBuilder::<Sqlite>::new("SELECT ");
        query.push(UPLOAD_COLUMNS).push(
            " FROM changes c JOIN uploads u ON u.dataset = c.dataset AND u.sequence = c.sequence \
             WHERE c.dataset = ",
        );
        query.push_bind(dataset).push(" AND c.key = ").push_bind(&key);
        query.push(" AND c.op = ").push_bind(ChangeOp::Upsert.as_str());
        query.push(" AND c.sequence = (SELECT max(l.sequence) FROM changes l WHERE l.dataset = ");
        query.push_bind(dataset).push(" AND l.key = ").push_bind(&key).push(")");
        let row = query.build().fetch_optional(&self.readers).await.map_err(db_error)?;
        row.as_ref().map(upload).transpose()
    }
}

crate::interface::interface_store!(SqliteStore, sqlx::Sqlite, readers, writer);
crate::federation::federation_store!(SqliteStore, sqlx::Sqlite, readers, writer, "instr");
crate::console::console_store!(SqliteStore, sqlx::Sqlite, readers, writer);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_urls_are_recognised() {
        assert!(in_memory("sqlite::memory:"));
        assert!(in_memory("sqlite://:memory:"));
        assert!(in_memory("sqlite://?mode=memory&cache=shared"));
        assert!(!in_memory("sqlite:///var/lib/xinqiao/hub.db"));
        assert!(!in_memory("sqlite://hub.db"));
    }
}
