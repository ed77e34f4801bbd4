//! PostgreSQL, for production and for several hub nodes over one database.
//!
//! Nothing here assumes this hub is alone: resource codes come from a counter row locked inside
//! the creating transaction, entry versions are compare-and-set on the version column, and the
//! schema is migrated under an advisory lock so that hubs may start together.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, Decode, Postgres, QueryBuilder, Row, Type};
use xinqiao_domain::catalogue::{CatalogEntry, EntryContent, EntryFilter, resource_code};
use xinqiao_domain::compatibility::{CompatibilityMode, DEFAULT_MODE};
use xinqiao_domain::department::{Department, DepartmentProfile};
use xinqiao_domain::lifecycle::{EntryAction, EntryState};
use xinqiao_domain::policy::EntryVisibility;
use xinqiao_domain::schema::{RegisteredSchema, SchemaRef, Subject};
use xinqiao_domain::{Error, Result};

use crate::error::{corrupt, db_error, migrate_error, translate};
use crate::{
    CatalogStore, DepartmentStore, EntryChange, EntrySchemaBinding, EntryVersionRecord, NewSchema, Registration,
    SchemaStore,
};

const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a pooled connection before UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The current version of an entry, with its provider's name.
const SELECT_ENTRY: &str = "SELECT e.resource_code, e.provider_code, d.name AS provider_name, e.content, e.state, \
     e.version, e.state_reason, e.published_at, e.created_at, e.updated_at \
     FROM catalog_entries e JOIN departments d ON d.code = e.provider_code";

const DEPARTMENT_COLUMNS: &str = "code, name, division_code, contact, active, created_at, updated_at";

/// The store on a PostgreSQL database, shared by every hub node.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `postgres://…` and brings the schema up to date. The tables go where the
    /// connection's search_path puts them (normally `public`).
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(parse_url(url)?, None).await
    }

    /// Like [`PgStore::open`], but keeps every table in `schema` (created if missing) by setting
    /// the search_path of each connection: several hubs, or tests, can share one database
    /// without seeing each other. `schema` is a plain lower-case SQL identifier.
    pub async fn open_in_schema(url: &str, schema: &str) -> Result<Self> {
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
        Self::open_with(options, Some(schema)).await
    }

    async fn open_with(options: PgConnectOptions, schema: Option<&str>) -> Result<Self> {
        // sqlx's PostgreSQL migrator (sqlx-postgres 0.9 `migrate.rs`, `Migrate::lock`) holds
        // `pg_advisory_lock` on a key derived from the database name from before it creates its
        // bookkeeping table until every migration is applied, so hubs starting together apply
        // each migration once. Creating the schema is done under the same lock, since concurrent
        // `CREATE SCHEMA IF NOT EXISTS` can still collide.
        let mut migrator = sqlx::migrate!("migrations/postgres");
        if let Some(schema) = schema {
            migrator.create_schema(schema.to_owned());
        }
        // The lock belongs to the session, and the migrator does not release it when a migration
        // fails: migrating on a connection of its own, closed afterwards, never leaves a pooled
        // connection holding it.
        let mut conn = PgConnection::connect_with(&options).await.map_err(db_error)?;
        let migrated = migrator.run(&mut conn).await;
        // Closing only says goodbye politely; dropping the connection releases the lock as well.
        let _ = conn.close().await;
        migrated.map_err(migrate_error)?;

        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(PgStore { pool })
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        self.pool.close().await;
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

fn department(row: &PgRow) -> Result<Department> {
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

fn entry(row: &PgRow) -> Result<CatalogEntry> {
    let Json(content): Json<EntryContent> = get(row, "content")?;
    let state: String = get(row, "state")?;
    let version: i64 = get(row, "version")?;
    Ok(CatalogEntry {
        resource_code: get(row, "resource_code")?,
        provider_code: get(row, "provider_code")?,
        provider_name: get(row, "provider_name")?,
        content,
        state: EntryState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        version: u64::try_from(version).map_err(|e| corrupt("version", e))?,
        state_reason: get(row, "state_reason")?,
        published_at: get(row, "published_at")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
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

async fn fetch_entry(conn: &mut PgConnection, resource_code: &str) -> Result<Option<CatalogEntry>> {
    let mut query = QueryBuilder::<Postgres>::new(SELECT_ENTRY);
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

/// An entry version as it is written: the values the rows will hold.
struct StoredEntry<'a> {
    resource_code: &'a str,
    version: i64,
    state: EntryState,
    state_reason: &'a str,
    published_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    content: &'a EntryContent,
}

/// Records the version an entry has just reached, with the change that made it.
async fn insert_version(conn: &mut PgConnection, entry: &StoredEntry<'_>, change: &EntryChange) -> Result<()> {
    sqlx::query(
        "INSERT INTO catalog_entry_versions (resource_code, version, state, state_reason, published_at, \
         updated_at, content, action, actor, reason, changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(entry.resource_code)
    .bind(entry.version)
    .bind(entry.state.as_str())
    .bind(entry.state_reason)
    .bind(entry.published_at)
    .bind(entry.updated_at)
    .bind(Json(entry.content))
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

#[async_trait]
impl DepartmentStore for PgStore {
    async fn register_department(&self, profile: &DepartmentProfile, at: DateTime<Utc>) -> Result<Department> {
        let at = stored_time(at);
        let mut query = QueryBuilder::<Postgres>::new(
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
            .fetch_one(&self.pool)
            .await
            .map_err(|e| translate(e, &format!("department {}", profile.code)))?;
        department(&row)
    }

    async fn update_department(&self, profile: &DepartmentProfile, at: DateTime<Utc>) -> Result<Department> {
        let mut query = QueryBuilder::<Postgres>::new("UPDATE departments SET name = ");
        query.push_bind(&profile.name);
        query.push(", division_code = ").push_bind(&profile.division_code);
        query.push(", contact = ").push_bind(&profile.contact);
        query.push(", updated_at = ").push_bind(stored_time(at));
        query.push(" WHERE code = ").push_bind(&profile.code);
        query.push(" RETURNING ").push(DEPARTMENT_COLUMNS);
        let row = query.build().fetch_optional(&self.pool).await.map_err(db_error)?;
        row.as_ref()
            .map(department)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("department {}", profile.code)))
    }

    async fn set_department_active(&self, code: &str, active: bool, at: DateTime<Utc>) -> Result<Department> {
        let mut query = QueryBuilder::<Postgres>::new("UPDATE departments SET active = ");
        query.push_bind(active);
        query.push(", updated_at = ").push_bind(stored_time(at));
        query.push(" WHERE code = ").push_bind(code);
        query.push(" RETURNING ").push(DEPARTMENT_COLUMNS);
        let row = query.build().fetch_optional(&self.pool).await.map_err(db_error)?;
        row.as_ref()
            .map(department)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("department {code}")))
    }

    async fn get_department(&self, code: &str) -> Result<Option<Department>> {
        let mut query = QueryBuilder::<Postgres>::new("SELECT ");
        query
            .push(DEPARTMENT_COLUMNS)
            .push(" FROM departments WHERE code = ")
            .push_bind(code);
        let row = query.build().fetch_optional(&self.pool).await.map_err(db_error)?;
        row.as_ref().map(department).transpose()
    }

    async fn list_departments(
        &self,
        after: Option<&str>,
        limit: u32,
        include_inactive: bool,
    ) -> Result<Vec<Department>> {
        let mut query = QueryBuilder::<Postgres>::new("SELECT ");
        query.push(DEPARTMENT_COLUMNS).push(" FROM departments WHERE TRUE");
        if !include_inactive {
            query.push(" AND active = ").push_bind(true);
        }
        if let Some(after) = after {
            query.push(" AND code > ").push_bind(after);
        }
        query.push(" ORDER BY code LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.pool).await.map_err(db_error)?;
        rows.iter().map(department).collect()
    }
}

#[async_trait]
impl CatalogStore for PgStore {
    async fn create_entry(
        &self,
        provider_code: &str,
        content: &EntryContent,
        change: &EntryChange,
    ) -> Result<CatalogEntry> {
        let at = stored_time(change.at);
        let mut tx = self.pool.begin().await.map_err(db_error)?;

        let provider: Option<i32> = sqlx::query_scalar("SELECT 1 FROM departments WHERE code = $1")
            .bind(provider_code)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if provider.is_none() {
            return Err(Error::NotFound(format!("department {provider_code}")));
        }

        // The upsert locks the classification's counter row until this transaction ends, so
        // concurrent creators on any hub node take numbers one after another, never the same.
        let sequence: i64 = sqlx::query_scalar(
            "INSERT INTO entry_sequences (classification, last_sequence) VALUES ($1, 1) \
             ON CONFLICT (classification) DO UPDATE SET last_sequence = entry_sequences.last_sequence + 1 \
             RETURNING last_sequence",
        )
        .bind(&content.classification)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| translate(e, &format!("the sequence of classification {}", content.classification)))?;
        let sequence = u64::try_from(sequence).map_err(|e| corrupt("entry_sequences.last_sequence", e))?;
        let code = resource_code(&content.classification, sequence);

        sqlx::query(
            "INSERT INTO catalog_entries (resource_code, provider_code, classification, name, summary, search_text, \
             share_type, open_type, update_cycle, format, state, version, state_reason, content, published_at, \
             created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, '', $12, NULL, $13, $13)",
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
        .bind(Json(content))
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
            content,
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
            content,
        };
        let mut tx = self.pool.begin().await.map_err(db_error)?;

        // A compare-and-set on the version: a concurrent change that got here first holds the
        // row lock; once it commits, PostgreSQL re-checks the condition, finds the version moved
        // on, and this update touches no row.
        let updated = sqlx::query(
            "UPDATE catalog_entries SET classification = $1, name = $2, summary = $3, search_text = $4, \
             share_type = $5, open_type = $6, update_cycle = $7, format = $8, state = $9, version = $10, \
             state_reason = $11, content = $12, published_at = $13, updated_at = $14 \
             WHERE resource_code = $15 AND version = $16",
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
        .bind(Json(content))
        .bind(stored.published_at)
        .bind(stored.updated_at)
        .bind(&entry.resource_code)
        .bind(version - 1)
        .execute(&mut *tx)
        .await
        .map_err(|e| translate(e, &format!("catalogue entry {}", entry.resource_code)))?;

        if updated.rows_affected() == 0 {
            let current: Option<i64> =
                sqlx::query_scalar("SELECT version FROM catalog_entries WHERE resource_code = $1")
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
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
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
             WHERE v.resource_code = $1 AND v.version = $2",
        )
        .bind(resource_code)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.as_ref().map(entry).transpose()
    }

    async fn list_entry_versions(&self, resource_code: &str) -> Result<Vec<EntryVersionRecord>> {
        let rows = sqlx::query(
            "SELECT version, state, action, actor, reason, changed_at FROM catalog_entry_versions \
             WHERE resource_code = $1 ORDER BY version",
        )
        .bind(resource_code)
        .fetch_all(&self.pool)
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
        let mut query = QueryBuilder::<Postgres>::new(SELECT_ENTRY);
        query.push(" WHERE TRUE");
        if let EntryVisibility::PublishedOrOwnedBy(code) = visibility {
            query.push(" AND (e.state = ").push_bind(EntryState::Published.as_str());
            query.push(" OR e.provider_code = ").push_bind(code).push(")");
        }
        if !filter.keyword.is_empty() {
            // strpos() is a plain substring test, so quotes, % and _ need no escaping; both
            // sides are lower-cased (search_text when stored) for a case-insensitive match.
            query
                .push(" AND strpos(e.search_text, ")
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
        let rows = query.build().fetch_all(&self.pool).await.map_err(db_error)?;
        rows.iter().map(entry).collect()
    }
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
