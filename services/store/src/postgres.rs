//! PostgreSQL, for production and for several hub nodes over one database.
//!
//! Nothing here assumes this hub is alone: resource codes come from a counter row locked inside
//! the creating transaction, entry versions are compare-and-set on the version column, and the
//! schema is migrated under an advisory lock so that hubs may start together.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, Decode, Postgres, QueryBuilder, Row, Type};
use xinqiao_domain::catalogue::{CatalogEntry, EntryContent, EntryFilter, ShareType, resource_code};
use xinqiao_domain::compatibility::{CompatibilityMode, DEFAULT_MODE};
use xinqiao_domain::exchange::{ChangeOp, Dataset, DatasetKind};
use xinqiao_domain::lifecycle::{EntryAction, EntryState};
use xinqiao_domain::policy::EntryVisibility;
use xinqiao_domain::schema::{RegisteredSchema, SchemaRef, Subject};
use xinqiao_domain::{Error, Result};

use crate::error::{corrupt, dataset_write_error, db_error, migrate_error, translate};
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

const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a pooled connection before UNAVAILABLE. It is also how long a call
/// waits for a database that went away (the pool keeps trying to connect), and a failed call's
/// audit event may wait as long again: short enough that a caller hears UNAVAILABLE well before
/// its own deadline, long enough for a fast restart of PostgreSQL to go unnoticed.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The row locks a transaction takes on a row it reads and then changes (FOR UPDATE) or relies on
/// staying as it is (FOR SHARE), so that the transactions of every hub node touching it take turns.
const FOR_UPDATE: &str = "FOR UPDATE";
const FOR_SHARE: &str = "FOR SHARE";

/// The store on a PostgreSQL database, shared by every hub node.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// How to connect for migrations, which run on a connection of their own.
    options: PgConnectOptions,
    /// The schema every table is kept in, when not the search_path's default.
    schema: Option<String>,
}

impl PgStore {
    /// Connects to `postgres://…` and brings the schema up to date. The tables go where the
    /// connection's search_path puts them (normally `public`).
    pub async fn open(url: &str) -> Result<Self> {
        let store = Self::connect(url)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Like [`PgStore::open`], but keeps every table in `schema` (created if missing) by setting
    /// the search_path of each connection: several hubs, or tests, can share one database
    /// without seeing each other. `schema` is a plain lower-case SQL identifier.
    pub async fn open_in_schema(url: &str, schema: &str) -> Result<Self> {
        let store = Self::connect_in_schema(url, schema)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Like [`PgStore::open`], but leaves the schema as it is (see `OperationsStore`). Connections
    /// are made when first needed.
    pub fn connect(url: &str) -> Result<Self> {
        Ok(Self::connect_with(parse_url(url)?, None))
    }

    /// Like [`PgStore::open_in_schema`], but leaves the schema as it is.
    pub fn connect_in_schema(url: &str, schema: &str) -> Result<Self> {
        let valid = schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(Error::invalid(
                "schema",
                "must be 1 to 63 of a-z, 0-9 and _, not starting with a digit",
            ));
        }
        let options = parse_url(url)?.options([("search_path", schema)]);
        Ok(Self::connect_with(options, Some(schema)))
    }

    fn connect_with(options: PgConnectOptions, schema: Option<&str>) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        PgStore {
            pool,
            options,
            schema: schema.map(str::to_owned),
        }
    }

    /// The migrations this build carries.
    fn migrator() -> Migrator {
        sqlx::migrate!("migrations/postgres")
    }

    async fn migrate(&self) -> Result<()> {
        // sqlx's PostgreSQL migrator (sqlx-postgres 0.9 `migrate.rs`, `Migrate::lock`) holds
        // `pg_advisory_lock` on a key derived from the database name from before it creates its
        // bookkeeping table until every migration is applied, so hubs starting together apply
        // each migration once. Creating the schema is done under the same lock, since concurrent
        // `CREATE SCHEMA IF NOT EXISTS` can still collide.
        let mut migrator = Self::migrator();
        if let Some(schema) = &self.schema {
            migrator.create_schema(schema.clone());
        }
        // The lock belongs to the session, and the migrator does not release it when a migration
        // fails: migrating on a connection of its own, closed afterwards, never leaves a pooled
        // connection holding it.
        let mut conn = PgConnection::connect_with(&self.options).await.map_err(db_error)?;
        let migrated = migrator.run_direct(None, &mut conn, false).await;
        // Closing only says goodbye politely; dropping the connection releases the lock as well.
        let _ = conn.close().await;
        migrated.map_err(migrate_error)
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction, as SQLite's store begins one (there, IMMEDIATE). Under READ COMMITTED;
    /// concurrent writers are kept apart by row locks (`FOR_UPDATE`) and compare-and-set updates.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db_error)
    }

    /// Begins a read-only transaction whose statements all see one snapshot, for reads that take
    /// more than one query.
    async fn begin_snapshot(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db_error)
    }
}

fn parse_url(url: &str) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).map_err(|e| Error::invalid("database_url", format!("is not a PostgreSQL URL: {e}")))
}

/// PostgreSQL keeps microseconds (rounding the rest); truncating first makes the value stored
/// exactly the value given, on both backends.
fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_nanosecond(at.nanosecond() / 1_000 * 1_000).unwrap_or(at)
}

fn get<'r, T: Decode<'r, Postgres> + Type<Postgres>>(row: &'r PgRow, column: &str) -> Result<T> {
    row.try_get(column).map_err(db_error)
}

fn db_version(version: u64) -> Result<i64> {
    i64::try_from(version).map_err(|_| Error::invalid("version", "is out of range"))
}

// ---------------------------------------------------------------------------------------------
// The schema registry
//
// Registrations of one subject lock its subject row (FOR UPDATE) and so run one after another on
// every hub node; a version being referenced or bound is locked FOR SHARE, so that it cannot be
// deleted (soft or for good) before the transaction that uses it commits.

/// The registry_settings row that holds the registry-wide default compatibility mode.
const DEFAULT_COMPATIBILITY_KEY: &str = "default_compatibility";

const SCHEMA_COLUMNS: &str = "subject, version, content, fingerprint, registered_by, deleted, created_at";

/// Subjects (alias `s`) with their highest live version and their number of versions: the live
/// ones, or every stored one with `include_deleted`.
fn select_subjects(include_deleted: bool) -> QueryBuilder<Postgres> {
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

fn subject(row: &PgRow) -> Result<Subject> {
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
fn schema(row: &PgRow) -> Result<RegisteredSchema> {
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
/// registration created the same subject first.
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
    conn: &mut PgConnection,
    subject: &str,
    version: Option<u32>,
    include_deleted: bool,
) -> Result<Vec<RegisteredSchema>> {
    let mut query = QueryBuilder::<Postgres>::new("SELECT ");
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

    let mut query = QueryBuilder::<Postgres>::new(
        "SELECT version, ref_subject, ref_version FROM schema_references WHERE subject = ",
    );
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

async fn fetch_schema(conn: &mut PgConnection, subject: &str, version: u32) -> Result<Option<RegisteredSchema>> {
    Ok(fetch_schemas(conn, subject, Some(version), true).await?.pop())
}

async fn fetch_subject(conn: &mut PgConnection, name: &str) -> Result<Option<Subject>> {
    let mut query = select_subjects(false);
    query.push(" WHERE s.subject = ").push_bind(name);
    let row = query.build().fetch_optional(conn).await.map_err(db_error)?;
    row.as_ref().map(subject).transpose()
}

/// Whether a version exists and is live; `None` if it does not exist. `lock` is appended to the
/// query: FOR SHARE to keep the version as it is, FOR UPDATE to change it, until the
/// transaction ends.
async fn version_live(conn: &mut PgConnection, subject: &str, version: u32, lock: &str) -> Result<Option<bool>> {
    let mut query = QueryBuilder::<Postgres>::new("SELECT deleted FROM schema_versions WHERE subject = ");
    query.push_bind(subject);
    query.push(" AND version = ").push_bind(i64::from(version));
    query.push(" ").push(lock);
    let deleted: Option<bool> = query
        .build_query_scalar()
        .fetch_optional(conn)
        .await
        .map_err(db_error)?;
    Ok(deleted.map(|deleted| !deleted))
}

#[async_trait]
impl SchemaStore for PgStore {
    /// In one transaction that holds the subject's row lock, in this order: (1) a live version of
    /// the subject with the same fingerprint is returned as `Existing`, with nothing written,
    /// even when `after_version` is stale; (2) the subject's highest stored version (deleted
    /// ones included) must equal `after_version`, else ABORTED; (3) every reference must name a
    /// live version, else NOT_FOUND naming it; (4) the subject is created if new (owned by
    /// `registered_by`) and the version stored with its references. Two hubs creating the same
    /// subject at once: the loser's unique violation is ABORTED as well.
    ///
    /// The new version is one past the highest ever handed out in the subject. That is
    /// `after_version + 1` unless the subject's highest version was deleted for good, whose
    /// number is not given out again.
    async fn register_schema(&self, new: &NewSchema<'_>) -> Result<Registration> {
        let at = stored_time(new.at);
        let mut tx = self.pool.begin().await.map_err(db_error)?;

        let last_version: Option<i64> =
            sqlx::query_scalar("SELECT last_version FROM schema_subjects WHERE subject = $1 FOR UPDATE")
                .bind(new.subject)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| translate(e, &format!("schema subject {}", new.subject)))?;

        let same: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM schema_versions WHERE subject = $1 AND fingerprint = $2 AND NOT deleted \
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

        let highest: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_versions WHERE subject = $1")
                .bind(new.subject)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        if highest != i64::from(new.after_version) {
            return Err(subject_changed(new.subject));
        }

        for reference in new.references {
            match version_live(&mut tx, &reference.subject, reference.version, "FOR SHARE").await? {
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
            sqlx::query("UPDATE schema_subjects SET last_version = $1 WHERE subject = $2")
                .bind(version)
                .bind(new.subject)
                .execute(&mut *tx)
                .await
                .map_err(|e| registration_error(e, new.subject))?;
        } else {
            // A hub creating the same subject meanwhile holds the key until it commits; then this
            // insert fails with a unique violation.
            sqlx::query(
                "INSERT INTO schema_subjects (subject, owner, compatibility, last_version, created_at) \
                 VALUES ($1, $2, NULL, $3, $4)",
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
             VALUES ($1, $2, $3, $4, $5, FALSE, $6)",
        )
        .bind(new.subject)
        .bind(version)
        .bind(new.content)
        .bind(new.fingerprint)
        .bind(new.registered_by)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| registration_error(e, new.subject))?;
        for (position, reference) in new.references.iter().enumerate() {
            sqlx::query(
                "INSERT INTO schema_references (subject, version, position, ref_subject, ref_version) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(new.subject)
            .bind(version)
            .bind(i32::try_from(position).map_err(|_| Error::invalid("references", "are too many"))?)
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
        tx.commit().await.map_err(|e| registration_error(e, new.subject))?;
        Ok(Registration::Created(created))
    }

    /// Any stored subject, also one whose versions are all deleted; `version_count` counts the
    /// live versions.
    async fn get_subject(&self, subject: &str) -> Result<Option<Subject>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        fetch_subject(&mut conn, subject).await
    }

    /// `latest_version` is the highest live version (`None` if there is none); `version_count`
    /// counts the live versions, or every stored one with `include_deleted`.
    async fn list_subjects(&self, after: Option<&str>, limit: u32, include_deleted: bool) -> Result<Vec<Subject>> {
        let mut query = select_subjects(include_deleted);
        query.push(" WHERE TRUE");
        if !include_deleted {
            query.push(" AND EXISTS (SELECT 1 FROM schema_versions v WHERE v.subject = s.subject AND NOT v.deleted)");
        }
        if let Some(after) = after {
            query.push(" AND s.subject > ").push_bind(after);
        }
        query.push(" ORDER BY s.subject LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.pool).await.map_err(db_error)?;
        rows.iter().map(subject).collect()
    }

    async fn get_schema(&self, subject: &str, version: u32) -> Result<Option<RegisteredSchema>> {
        // One snapshot for the version and its references.
        let mut tx = self.begin_snapshot().await?;
        fetch_schema(&mut tx, subject, version).await
    }

    async fn latest_schema(&self, subject: &str) -> Result<Option<RegisteredSchema>> {
        let mut tx = self.begin_snapshot().await?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM schema_versions WHERE subject = $1 AND NOT deleted")
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
        let mut tx = self.begin_snapshot().await?;
        fetch_schemas(&mut tx, subject, None, include_deleted).await
    }

    async fn set_schema_deleted(&self, subject: &str, version: u32, deleted: bool) -> Result<RegisteredSchema> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let updated = sqlx::query("UPDATE schema_versions SET deleted = $1 WHERE subject = $2 AND version = $3")
            .bind(deleted)
            .bind(subject)
            .bind(i64::from(version))
            .execute(&mut *tx)
            .await
            .map_err(|e| translate(e, &format!("schema {subject} version {version}")))?;
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
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // The row lock waits for transactions that are binding or referencing this version.
        match version_live(&mut tx, subject, version, "FOR UPDATE").await? {
            None => return Err(schema_not_found(subject, version)),
            Some(true) => {
                return Err(Error::FailedPrecondition(format!(
                    "schema {subject} version {version} is not deleted; delete it (soft) before deleting it for good"
                )));
            }
            Some(false) => {}
        }

        let bound: Option<String> = sqlx::query_scalar(
            "SELECT resource_code FROM entry_schema_bindings WHERE subject = $1 AND version = $2 \
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
            "SELECT id FROM datasets WHERE schema_subject = $1 AND schema_version = $2 ORDER BY id LIMIT 1",
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
            "SELECT subject, version FROM schema_references WHERE ref_subject = $1 AND ref_version = $2 \
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

        sqlx::query("DELETE FROM schema_references WHERE subject = $1 AND version = $2")
            .bind(subject)
            .bind(i64::from(version))
            .execute(&mut *tx)
            .await
            .map_err(|e| translate(e, &format!("schema {subject} version {version}")))?;
        sqlx::query("DELETE FROM schema_versions WHERE subject = $1 AND version = $2")
            .bind(subject)
            .bind(i64::from(version))
            .execute(&mut *tx)
            .await
            .map_err(|e| translate(e, &format!("schema {subject} version {version}")))?;
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }

    async fn default_compatibility(&self) -> Result<CompatibilityMode> {
        let value: Option<String> = sqlx::query_scalar("SELECT value FROM registry_settings WHERE key = $1")
            .bind(DEFAULT_COMPATIBILITY_KEY)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        match value {
            Some(mode) => compatibility(&mode),
            None => Ok(DEFAULT_MODE),
        }
    }

    async fn set_default_compatibility(&self, mode: CompatibilityMode) -> Result<()> {
        sqlx::query(
            "INSERT INTO registry_settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(DEFAULT_COMPATIBILITY_KEY)
        .bind(mode.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| translate(e, "the default compatibility"))?;
        Ok(())
    }

    async fn set_subject_compatibility(&self, subject: &str, mode: Option<CompatibilityMode>) -> Result<Subject> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let updated = sqlx::query("UPDATE schema_subjects SET compatibility = $1 WHERE subject = $2")
            .bind(mode.map(|m| m.as_str()))
            .bind(subject)
            .execute(&mut *tx)
            .await
            .map_err(|e| translate(e, &format!("schema subject {subject}")))?;
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
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let entry: Option<i32> = sqlx::query_scalar("SELECT 1 FROM catalog_entries WHERE resource_code = $1")
            .bind(&binding.resource_code)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if entry.is_none() {
            return Err(Error::NotFound(format!("catalogue entry {}", binding.resource_code)));
        }
        match version_live(&mut tx, &schema.subject, schema.version, "FOR SHARE").await? {
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
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (resource_code) DO UPDATE SET subject = EXCLUDED.subject, \
             version = EXCLUDED.version, bound_by = EXCLUDED.bound_by, bound_at = EXCLUDED.bound_at",
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
             WHERE resource_code = $1",
        )
        .bind(resource_code)
        .fetch_optional(&self.pool)
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

/// The channel on which committed batches are announced to every hub node. Channels are
/// database-wide, so the payload names the schema first: `<schema> <last sequence> <dataset>`.
const CHANGES_CHANNEL: &str = "xinqiao_changes";

/// How long the listener waits before trying again after losing the database, at first and at
/// most.
const LISTEN_RETRY: Duration = Duration::from_millis(100);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(10);

fn stored_u64(value: i64, column: &str) -> Result<u64> {
    u64::try_from(value).map_err(|e| corrupt(column, e))
}

fn dataset(row: &PgRow) -> Result<Dataset> {
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

fn listing(row: &PgRow) -> Result<DatasetListing> {
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

fn stored_change(row: &PgRow) -> Result<StoredChange> {
    let op: String = get(row, "op")?;
    Ok(StoredChange {
        sequence: stored_u64(get(row, "sequence")?, "changes.sequence")?,
        op: ChangeOp::parse(&op).ok_or_else(|| corrupt("changes.op", &op))?,
        key: get(row, "key")?,
        record: get(row, "record")?,
        published_at: get(row, "published_at")?,
    })
}

fn upload(row: &PgRow) -> Result<Upload> {
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

fn cursor(row: &PgRow) -> Result<ConsumerCursor> {
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

/// Reads a notification's payload, `<schema> <last sequence> <dataset>`, if it comes from the
/// store in `schema`.
fn parse_notification<'p>(payload: &'p str, schema: &str) -> Option<(&'p str, u64)> {
    let rest = payload.strip_prefix(schema)?.strip_prefix(' ')?;
    let (sequence, dataset) = rest.split_once(' ')?;
    Some((dataset, sequence.parse().ok()?))
}

async fn fetch_dataset(conn: &mut PgConnection, id: &str, lock: &str) -> Result<Option<Dataset>> {
    let mut query = QueryBuilder::<Postgres>::new("SELECT ");
    query
        .push(DATASET_COLUMNS)
        .push(" FROM datasets ds WHERE ds.id = ")
        .push_bind(id);
    query.push(" ").push(lock);
    let row = query.build().fetch_optional(conn).await.map_err(db_error)?;
    row.as_ref().map(dataset).transpose()
}

/// An upload, locked FOR UPDATE (or not, with `lock` empty) until the transaction ends.
async fn fetch_upload(conn: &mut PgConnection, id: &str, lock: &str) -> Result<Option<Upload>> {
    let mut query = QueryBuilder::<Postgres>::new("SELECT ");
    query
        .push(UPLOAD_COLUMNS)
        .push(" FROM uploads u WHERE u.id = ")
        .push_bind(id);
    query.push(" ").push(lock);
    let row = query.build().fetch_optional(conn).await.map_err(db_error)?;
    row.as_ref().map(upload).transpose()
}

/// The result a batch committed with its idempotency key, if one was.
async fn committed_batch(conn: &mut PgConnection, dataset: &str, key: &str) -> Result<Option<BatchResult>> {
    let row = sqlx::query(
        "SELECT accepted, rejected, first_sequence, last_sequence FROM batches \
         WHERE dataset = $1 AND idempotency_key = $2",
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

/// Locks the dataset's row until the transaction ends and reads its head. Every writer of the
/// dataset's log, on every hub node, takes this lock first: they number their changes one after
/// another, and each commits (releasing the lock) before the next reads the head it left. So
/// sequence numbers become visible in order, and a reader that has seen N never sees a lower
/// number appear later.
async fn lock_dataset(conn: &mut PgConnection, id: &str) -> Result<Head> {
    let row = sqlx::query("SELECT last_sequence, record_count FROM datasets WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(|e| translate(e, &format!("dataset {id}")))?
        .ok_or_else(|| dataset_not_found(id))?;
    Ok(Head {
        last_sequence: get(&row, "last_sequence")?,
        record_count: get(&row, "record_count")?,
    })
}

/// Appends `changes` to a dataset's log after `head` (whose row the caller has locked) and moves
/// the dataset on: its last sequence, record count and last publish time, announcing the new
/// head to the other hub nodes at commit. Returns the first and last sequence numbers given (0
/// and 0 for no change).
async fn append_changes(
    conn: &mut PgConnection,
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
    // through the (dataset, key, sequence) index. This statement's snapshot is taken after the
    // lock was granted, so it sees every earlier batch.
    let keys = BatchKeys::of(changes);
    let present_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM UNNEST($2::text[]) AS k(key) WHERE (SELECT c.op FROM changes c \
         WHERE c.dataset = $1 AND c.key = k.key ORDER BY c.sequence DESC LIMIT 1) = 'upsert'",
    )
    .bind(dataset)
    .bind(&keys.keys)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;

    // The whole batch in one statement, as parallel arrays: change i gets sequence last + i.
    let ops: Vec<&str> = changes.iter().map(|c| c.op.as_str()).collect();
    let change_keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    let records: Vec<Option<&str>> = changes.iter().map(|c| c.record.as_deref()).collect();
    sqlx::query(
        "INSERT INTO changes (dataset, sequence, op, key, record, published_at) \
         SELECT $1, $2 + u.n, u.op, u.key, u.record, $6 \
         FROM UNNEST($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(op, key, record, n)",
    )
    .bind(dataset)
    .bind(head.last_sequence)
    .bind(&ops)
    .bind(&change_keys)
    .bind(&records)
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(|e| translate(e, &format!("changes {first} to {last} of dataset {dataset}")))?;

    // The notification is delivered when (and only if) the transaction commits.
    sqlx::query(
        "WITH moved AS (UPDATE datasets SET last_sequence = $2, record_count = $3, last_published_at = $4 \
         WHERE id = $1 RETURNING id, last_sequence) \
         SELECT pg_notify($5, current_schema() || ' ' || last_sequence || ' ' || id) FROM moved",
    )
    .bind(dataset)
    .bind(last)
    .bind(keys.record_count(head.record_count, present_before))
    .bind(at)
    .bind(CHANGES_CHANNEL)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok((first, last))
}

/// Forwards the heads other nodes announce for this schema into `sink` until it closes or the
/// store does. A lost connection is reopened on the next receive; announcements made meanwhile
/// are lost, which is why the hub also re-reads the heads now and then.
/// Departments changed by any hub node, as `<schema> <code>` (see `listen_departments`).
const DEPARTMENTS_CHANNEL: &str = "xinqiao_departments";

impl PgStore {
    /// Tells every hub node that a department changed, after the change committed. A lost
    /// notification only delays the other nodes until their cached copy expires, so a failure is
    /// logged, not returned.
    async fn notify_department(&self, code: &str) {
        let sent = sqlx::query("SELECT pg_notify($1, current_schema() || ' ' || $2)")
            .bind(DEPARTMENTS_CHANNEL)
            .bind(code)
            .execute(&self.pool)
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, code, "could not tell the other hub nodes that a department changed");
        }
    }

    /// The schema this store works in: notifications name it, since several stores (tests, or
    /// several hubs' schemas) may share one database.
    async fn schema_name(&self) -> Result<String> {
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        schema.ok_or_else(|| Error::Internal("the connection has no current schema".into()))
    }

    /// A listener on `channel` over a pool of one kept open, through which PgListener reconnects.
    async fn listener(&self, channel: &str) -> Result<PgListener> {
        let connection = PgPoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let mut listener = PgListener::connect_with(&connection).await.map_err(db_error)?;
        listener.listen(channel).await.map_err(db_error)?;
        Ok(listener)
    }
}

async fn forward_departments(
    mut listener: PgListener,
    schema: String,
    sink: tokio::sync::mpsc::Sender<String>,
    closed: sqlx::pool::CloseEvent,
) {
    let mut retry = LISTEN_RETRY;
    tokio::pin!(closed);
    loop {
        let received = tokio::select! {
            received = listener.recv() => received,
            () = sink.closed() => break,
            () = &mut closed => break,
        };
        match received {
            Ok(notification) => {
                retry = LISTEN_RETRY;
                let Some(code) = notification
                    .payload()
                    .split_once(' ')
                    .and_then(|(from, code)| (from == schema).then_some(code))
                else {
                    continue;
                };
                if sink.send(code.to_string()).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "listening for department changes failed");
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = sink.closed() => break,
                }
                retry = (retry * 2).min(LISTEN_RETRY_MAX);
            }
        }
    }
}

async fn forward_changes(
    mut listener: PgListener,
    schema: String,
    sink: tokio::sync::mpsc::Sender<(String, u64)>,
    closed: sqlx::pool::CloseEvent,
) {
    let mut retry = LISTEN_RETRY;
    tokio::pin!(closed);
    loop {
        let received = tokio::select! {
            received = listener.recv() => received,
            () = sink.closed() => break,
            () = &mut closed => break,
        };
        match received {
            Ok(notification) => {
                retry = LISTEN_RETRY;
                let Some((dataset, sequence)) = parse_notification(notification.payload(), &schema) else {
                    continue;
                };
                if sink.send((dataset.to_string(), sequence)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "listening for other hub nodes' changes failed");
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = sink.closed() => break,
                }
                retry = (retry * 2).min(LISTEN_RETRY_MAX);
            }
        }
    }
}

#[async_trait]
impl ExchangeStore for PgStore {
    /// NOT_FOUND if the catalogue entry does not exist. Counts start at 0, whatever `dataset`
    /// says.
    async fn create_dataset(&self, new: &Dataset) -> Result<Dataset> {
        let key = serde_json::to_string(&new.key).map_err(|e| Error::Internal(format!("encoding the key: {e}")))?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let entry: Option<i32> = sqlx::query_scalar("SELECT 1 FROM catalog_entries WHERE resource_code = $1")
            .bind(&new.id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if entry.is_none() {
            return Err(Error::NotFound(format!("catalogue entry {}", new.id)));
        }
        sqlx::query(
            "INSERT INTO datasets (id, provider_code, kind, schema_subject, schema_version, key, record_count, \
             last_sequence, last_published_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, 0, 0, NULL, $7)",
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
        let created = fetch_dataset(&mut tx, &new.id, "")
            .await?
            .ok_or_else(|| Error::Internal(format!("dataset {} vanished while being created", new.id)))?;
        tx.commit().await.map_err(db_error)?;
        Ok(created)
    }

    async fn get_dataset(&self, id: &str) -> Result<Option<Dataset>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        fetch_dataset(&mut conn, id, "").await
    }

    /// NOT_FOUND for an unknown dataset; FAILED_PRECONDITION for a file dataset, or a schema of
    /// another subject.
    async fn set_dataset_schema(&self, id: &str, schema: &SchemaRef) -> Result<Dataset> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let current = fetch_dataset(&mut tx, id, "FOR UPDATE")
            .await?
            .ok_or_else(|| dataset_not_found(id))?;
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
        sqlx::query("UPDATE datasets SET schema_version = $1 WHERE id = $2")
            .bind(i64::from(schema.version))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let updated = fetch_dataset(&mut tx, id, "")
            .await?
            .ok_or_else(|| dataset_not_found(id))?;
        tx.commit().await.map_err(db_error)?;
        Ok(updated)
    }

    async fn list_datasets(
        &self,
        filter: &DatasetFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DatasetListing>> {
        let mut query = QueryBuilder::<Postgres>::new("SELECT ");
        query.push(DATASET_COLUMNS).push(
            ", e.name, d.name AS provider_name, e.share_type, e.state AS entry_state FROM datasets ds \
             JOIN catalog_entries e ON e.resource_code = ds.id JOIN departments d ON d.code = e.provider_code \
             WHERE TRUE",
        );
        if !filter.keyword.is_empty() {
            // strpos() is a plain substring test: quotes, % and _ match themselves.
            query
                .push(" AND (strpos(lower(e.name), lower(")
                .push_bind(&filter.keyword);
            query
                .push(")) > 0 OR strpos(lower(ds.id), lower(")
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
        let rows = query.build().fetch_all(&self.pool).await.map_err(db_error)?;
        rows.iter().map(listing).collect()
    }

    /// One transaction: (1) the idempotency key is looked up, and a replay writes nothing;
    /// (2) the dataset row is locked (see `lock_dataset`); (3) the batch row is claimed, and
    /// should a publisher of the same key on another node have committed it meanwhile, that
    /// result is returned instead; (4) the changes are numbered and inserted in one statement.
    async fn publish_batch(&self, batch: &NewBatch<'_>) -> Result<BatchResult> {
        let at = stored_time(batch.at);
        let accepted = u32::try_from(batch.changes.len()).map_err(|_| Error::invalid("changes", "are too many"))?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        if let Some(replayed) = committed_batch(&mut tx, batch.dataset, batch.idempotency_key).await? {
            return Ok(replayed);
        }
        let head = lock_dataset(&mut tx, batch.dataset).await?;
        let (first, last) = sequences(head.last_sequence, batch.changes.len())?;
        let claimed = sqlx::query(
            "INSERT INTO batches (dataset, idempotency_key, accepted, rejected, first_sequence, last_sequence, \
             committed_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dataset, idempotency_key) DO NOTHING",
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
        if claimed.rows_affected() == 0 {
            // Committed by another node between the look-up and the lock: its result stands.
            return committed_batch(&mut tx, batch.dataset, batch.idempotency_key)
                .await?
                .ok_or_else(|| {
                    Error::Aborted(format!(
                        "batch {} of dataset {} is being committed concurrently; retry",
                        batch.idempotency_key, batch.dataset
                    ))
                });
        }
        append_changes(&mut tx, batch.dataset, head, batch.changes, at).await?;
        // Last, so that the chain's head is locked only while this transaction commits.
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
        let mut query = QueryBuilder::<Postgres>::new("SELECT ");
        query
            .push(CHANGE_COLUMNS)
            .push(" FROM changes c WHERE c.dataset = ")
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
        let rows = query.build().fetch_all(&self.pool).await.map_err(db_error)?;
        rows.iter().map(stored_change).collect()
    }

    async fn dataset_heads(&self, ids: &[String]) -> Result<Vec<(String, u64)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT id, last_sequence FROM datasets WHERE id = ANY($1) ORDER BY id")
            .bind(ids)
            .fetch_all(&self.pool)
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

    /// Listens on a connection of its own (same options as the pool, so the same schema), and
    /// forwards the announcements of stores in the same schema from a background task.
    async fn listen_changes(&self, sink: tokio::sync::mpsc::Sender<(String, u64)>) -> Result<bool> {
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        let schema = schema.ok_or_else(|| Error::Internal("the connection has no current schema".into()))?;
        // A pool of one, kept open: PgListener reconnects through it.
        let connection = PgPoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let mut listener = PgListener::connect_with(&connection).await.map_err(db_error)?;
        listener.listen(CHANGES_CHANNEL).await.map_err(db_error)?;
        tokio::spawn(forward_changes(listener, schema, sink, self.pool.close_event()));
        Ok(true)
    }

    /// `updated_at` is when the position last moved. NOT_FOUND for an unknown dataset.
    async fn acknowledge(&self, cursor: &ConsumerCursor) -> Result<ConsumerCursor> {
        let row = sqlx::query(
            "INSERT INTO consumers (dataset, department, consumer, acknowledged, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dataset, department, consumer) DO UPDATE SET \
             updated_at = CASE WHEN excluded.acknowledged > consumers.acknowledged THEN excluded.updated_at \
             ELSE consumers.updated_at END, \
             acknowledged = GREATEST(consumers.acknowledged, excluded.acknowledged) \
             RETURNING dataset, department, consumer, acknowledged, updated_at",
        )
        .bind(&cursor.dataset)
        .bind(&cursor.department)
        .bind(&cursor.consumer)
        .bind(to_db(cursor.acknowledged, "acknowledged")?)
        .bind(stored_time(cursor.updated_at))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| dataset_write_error(e, &cursor.dataset, &format!("consumer {}", cursor.consumer)))?;
        self::cursor(&row)
    }

    async fn get_consumer(&self, dataset: &str, department: &str, consumer: &str) -> Result<Option<ConsumerCursor>> {
        let mut query = QueryBuilder::<Postgres>::new("SELECT ");
        query
            .push(CONSUMER_COLUMNS)
            .push(" FROM consumers WHERE dataset = ")
            .push_bind(dataset);
        query.push(" AND department = ").push_bind(department);
        query.push(" AND consumer = ").push_bind(consumer);
        let row = query.build().fetch_optional(&self.pool).await.map_err(db_error)?;
        row.as_ref().map(cursor).transpose()
    }

    /// Stores the upload with nothing received yet. NOT_FOUND for an unknown dataset,
    /// FAILED_PRECONDITION for a table dataset, ALREADY_EXISTS if the id is taken.
    async fn start_upload(&self, new: &Upload) -> Result<Upload> {
        let size = to_db(new.size, "size")?;
        let kind: Option<String> = sqlx::query_scalar("SELECT kind FROM datasets WHERE id = $1")
            .bind(&new.dataset)
            .fetch_optional(&self.pool)
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
        let mut query = QueryBuilder::<Postgres>::new(
            "INSERT INTO uploads AS u (id, dataset, file_name, size, sha256, received, sequence, started_by, \
             started_at) VALUES (",
        );
        let mut values = query.separated(", ");
        values.push_bind(&new.id);
        values.push_bind(&new.dataset);
        values.push_bind(&new.file_name);
        values.push_bind(size);
        values.push_bind(&new.sha256);
        values.push_bind(0_i64);
        values.push_bind(None::<i64>);
        values.push_bind(&new.started_by);
        values.push_bind(stored_time(new.started_at));
        query.push(") RETURNING ").push(UPLOAD_COLUMNS);
        let row = query
            .build()
            .fetch_one(&self.pool)
            .await
            .map_err(|e| dataset_write_error(e, &new.dataset, &format!("upload {}", new.id)))?;
        upload(&row)
    }

    async fn get_upload(&self, id: &str) -> Result<Option<Upload>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        fetch_upload(&mut conn, id, "").await
    }

    /// NOT_FOUND for an unknown upload; FAILED_PRECONDITION once it is complete or when `offset`
    /// is not the bytes received; RESOURCE_EXHAUSTED past the declared size. No bytes: nothing
    /// changes. Appends to one upload lock its row and so run one after another.
    async fn append_upload(&self, id: &str, offset: u64, data: &[u8]) -> Result<Upload> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let current = fetch_upload(&mut tx, id, "FOR UPDATE")
            .await?
            .ok_or_else(|| upload_not_found(id))?;
        let received = check_append(&current, offset, data)?;
        if data.is_empty() {
            return Ok(current);
        }
        sqlx::query("INSERT INTO upload_chunks (upload_id, chunk_offset, data) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(to_db(offset, "offset")?)
            .bind(data)
            .execute(&mut *tx)
            .await
            .map_err(|e| translate(e, &format!("the bytes at offset {offset} of upload {id}")))?;
        let mut query = QueryBuilder::<Postgres>::new("UPDATE uploads AS u SET received = ");
        query.push_bind(to_db(received, "received")?);
        query.push(" WHERE u.id = ").push_bind(id);
        query.push(" RETURNING ").push(UPLOAD_COLUMNS);
        let row = query.build().fetch_one(&mut *tx).await.map_err(db_error)?;
        let appended = upload(&row)?;
        tx.commit().await.map_err(db_error)?;
        Ok(appended)
    }

    /// Empty at or past the bytes received. NOT_FOUND for an unknown upload.
    async fn read_upload(&self, id: &str, offset: u64, max: u32) -> Result<Vec<u8>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let found = fetch_upload(&mut conn, id, "")
            .await?
            .ok_or_else(|| upload_not_found(id))?;
        let end = found.received.min(offset.saturating_add(u64::from(max)));
        if offset >= end {
            return Ok(Vec::new());
        }
        // The chunk that holds `offset` and those after it, up to `end`. Chunks once written
        // never change, so no snapshot is needed across the two reads.
        let rows = sqlx::query(
            "SELECT chunk_offset, data FROM upload_chunks WHERE upload_id = $1 AND chunk_offset < $3 \
             AND chunk_offset >= (SELECT max(chunk_offset) FROM upload_chunks WHERE upload_id = $1 \
             AND chunk_offset <= $2) ORDER BY chunk_offset",
        )
        .bind(id)
        .bind(to_db(offset, "offset")?)
        .bind(to_db(end, "offset")?)
        .fetch_all(&mut *conn)
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
    /// declared byte is received. Locks the upload, then the dataset (as publishers do).
    async fn complete_upload(&self, id: &str, metadata: &str, at: DateTime<Utc>) -> Result<Upload> {
        let at = stored_time(at);
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let current = fetch_upload(&mut tx, id, "FOR UPDATE")
            .await?
            .ok_or_else(|| upload_not_found(id))?;
        if current.sequence.is_some() {
            return Ok(current);
        }
        check_complete(&current)?;
        let head = lock_dataset(&mut tx, &current.dataset).await?;
        let change = NewChange {
            op: ChangeOp::Upsert,
            key: file_key(&current.file_name),
            record: Some(metadata.to_string()),
        };
        let (sequence, _) = append_changes(&mut tx, &current.dataset, head, std::slice::from_ref(&change), at).await?;
        let mut query = QueryBuilder::<Postgres>::new("UPDATE uploads AS u SET sequence = ");
        query.push_bind(sequence).push(" WHERE u.id = ").push_bind(id);
        query.push(" RETURNING ").push(UPLOAD_COLUMNS);
        let row = query.build().fetch_one(&mut *tx).await.map_err(db_error)?;
        let completed = upload(&row)?;
        tx.commit().await.map_err(db_error)?;
        Ok(completed)
    }

    /// The upload whose change is the file's latest, unless that change deleted the file.
    async fn current_file(&self, dataset: &str, file_name: &str) -> Result<Option<Upload>> {
        let mut query = QueryBuilder::<Postgres>::new("SELECT ");
        query.push(UPLOAD_COLUMNS).push(
            " FROM changes c JOIN uploads u ON u.dataset = c.dataset AND u.sequence = c.sequence \
             WHERE c.dataset = ",
        );
        query
            .push_bind(dataset)
            .push(" AND c.key = ")
            .push_bind(file_key(file_name));
        query.push(" AND c.op = ").push_bind(ChangeOp::Upsert.as_str());
        query.push(
            " AND c.sequence = (SELECT max(l.sequence) FROM changes l WHERE l.dataset = c.dataset AND l.key = c.key)",
        );
        let row = query.build().fetch_optional(&self.pool).await.map_err(db_error)?;
        row.as_ref().map(upload).transpose()
    }
}

crate::interface::interface_store!(PgStore, sqlx::Postgres, pool, pool);
crate::federation::federation_store!(PgStore, sqlx::Postgres, pool, pool, "strpos");
crate::console::console_store!(PgStore, sqlx::Postgres, pool, pool);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_read_for_their_schema_only() {
        assert_eq!(
            parse_notification("xq_a 42 102/000001", "xq_a"),
            Some(("102/000001", 42))
        );
        assert_eq!(parse_notification("public 7 a b", "public"), Some(("a b", 7)));
        assert_eq!(parse_notification("xq_a 42 102/000001", "xq_b"), None);
        assert_eq!(parse_notification("xq_ab 42 102/000001", "xq_a"), None);
        assert_eq!(parse_notification("xq_a x 102/000001", "xq_a"), None);
        assert_eq!(parse_notification("xq_a 42", "xq_a"), None);
    }
}
