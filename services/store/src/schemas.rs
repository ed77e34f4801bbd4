//! The schema registry, written once for both backends (`schema_store!`): the SQL is the same
//! text on both, the query builder writing each engine's placeholders.
//!
//! Backend-specific, through names each backend's module defines: the row locks (`FOR_UPDATE`,
//! `FOR_SHARE`), which on PostgreSQL make the registrations of one subject run one after another
//! on every hub node and keep a version being referenced or bound from being deleted before the
//! transaction that uses it commits, and which are empty on SQLite, whose single writer already
//! runs one write transaction at a time; and `begin_write` / `begin_snapshot`, each engine's write
//! transaction and multi-statement read.

use sqlx::{Database, QueryBuilder};
use xinqiao_domain::Error;
use xinqiao_domain::Result;
use xinqiao_domain::compatibility::CompatibilityMode;

use crate::error::{corrupt, translate};

/// The registry_settings row that holds the registry-wide default compatibility mode.
pub(crate) const DEFAULT_COMPATIBILITY_KEY: &str = "default_compatibility";

pub(crate) const SCHEMA_COLUMNS: &str = "subject, version, content, fingerprint, registered_by, deleted, created_at";

/// Subjects (alias `s`) with their highest live version and their number of versions: the live
/// ones, or every stored one with `include_deleted`.
pub(crate) fn select_subjects<DB: Database>(include_deleted: bool) -> QueryBuilder<DB> {
    let counted = if include_deleted { "" } else { " AND NOT v.deleted" };
    QueryBuilder::new(format!(
        "SELECT s.subject, s.owner, s.compatibility, \
         (SELECT MAX(v.version) FROM schema_versions v WHERE v.subject = s.subject AND NOT v.deleted) \
         AS latest_version, \
         (SELECT COUNT(*) FROM schema_versions v WHERE v.subject = s.subject{counted}) AS version_count \
         FROM schema_subjects s"
    ))
}

pub(crate) fn schema_version(version: i64, column: &str) -> Result<u32> {
    u32::try_from(version).map_err(|e| corrupt(column, e))
}

pub(crate) fn compatibility(text: &str) -> Result<CompatibilityMode> {
    CompatibilityMode::parse(text).map_err(|_| corrupt("compatibility", text))
}

/// ABORTED: the subject moved on between the caller's compatibility check and this write.
pub(crate) fn subject_changed(subject: &str) -> Error {
    Error::Aborted(format!(
        "subject {subject} changed while this registration was checked; retry"
    ))
}

/// Translates an error from writing a new version: a unique violation means a concurrent
/// registration stored the same version (or created the same subject) first.
pub(crate) fn registration_error(err: sqlx::Error, subject: &str) -> Error {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => subject_changed(subject),
        _ => translate(err, &format!("schema subject {subject}")),
    }
}

pub(crate) fn schema_not_found(subject: &str, version: u32) -> Error {
    Error::NotFound(format!("schema {subject} version {version}"))
}

/// The one implementation of [`crate::SchemaStore`]. Invoked in each backend's module, where
/// `get`, `stored_time`, `begin_write`, `begin_snapshot`, `FOR_UPDATE` and `FOR_SHARE` are that
/// backend's; `$row` and `$conn` are its row and connection types, `$read` and `$write` its pools.
macro_rules! schema_store {
    ($store:ty, $db:ty, $row:ty, $conn:ty, $read:ident, $write:ident) => {
        use sqlx::QueryBuilder;
        use xinqiao_domain::compatibility::{CompatibilityMode, DEFAULT_MODE};
        use xinqiao_domain::schema::{RegisteredSchema, SchemaRef, Subject};
        use xinqiao_domain::{Error, Result};

        use crate::error::{corrupt, db_error, translate};
        use crate::schemas::{
            DEFAULT_COMPATIBILITY_KEY, SCHEMA_COLUMNS, compatibility, registration_error, schema_not_found,
            schema_version, select_subjects, subject_changed,
        };
        use crate::{EntrySchemaBinding, NewSchema, Registration, SchemaStore};

        fn subject(row: &$row) -> Result<Subject> {
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
        fn schema(row: &$row) -> Result<RegisteredSchema> {
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

        /// `WHERE <subject column> = subject AND <version column> = version`.
        fn push_version(query: &mut QueryBuilder<$db>, columns: (&str, &str), subject: &str, version: u32) {
            query.push(" WHERE ").push(columns.0).push(" = ").push_bind(subject);
            query.push(" AND ").push(columns.1).push(" = ").push_bind(i64::from(version));
        }

        /// The versions of `subject` with their references, oldest first: one version, or all of
        /// them (the live ones only unless `include_deleted`).
        async fn fetch_schemas(
            conn: &mut $conn,
            subject: &str,
            version: Option<u32>,
            include_deleted: bool,
        ) -> Result<Vec<RegisteredSchema>> {
            let mut query = QueryBuilder::<$db>::new("SELECT ");
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

            let mut query = QueryBuilder::<$db>::new(
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

        async fn fetch_schema(conn: &mut $conn, subject: &str, version: u32) -> Result<Option<RegisteredSchema>> {
            Ok(fetch_schemas(conn, subject, Some(version), true).await?.pop())
        }

        async fn fetch_subject(conn: &mut $conn, name: &str) -> Result<Option<Subject>> {
            let mut query = select_subjects::<$db>(false);
            query.push(" WHERE s.subject = ").push_bind(name);
            let row = query.build().fetch_optional(conn).await.map_err(db_error)?;
            row.as_ref().map(subject).transpose()
        }

        /// Whether a version exists and is live; `None` if it does not exist. `lock` is appended
        /// to the query: `FOR_SHARE` to keep the version as it is, `FOR_UPDATE` to change it,
        /// until the transaction ends.
        async fn version_live(conn: &mut $conn, subject: &str, version: u32, lock: &str) -> Result<Option<bool>> {
            let mut query = QueryBuilder::<$db>::new("SELECT deleted FROM schema_versions");
            push_version(&mut query, ("subject", "version"), subject, version);
            query.push(" ").push(lock);
            let deleted: Option<bool> = query
                .build_query_scalar()
                .fetch_optional(conn)
                .await
                .map_err(db_error)?;
            Ok(deleted.map(|deleted| !deleted))
        }

        #[async_trait::async_trait]
        impl SchemaStore for $store {
            /// In one write transaction that holds the subject's row lock (on PostgreSQL), in this
            /// order: (1) a live version of the subject with the same fingerprint is returned as
            /// `Existing`, with nothing written, even when `after_version` is stale; (2) the
            /// subject's highest stored version (deleted ones included) must equal
            /// `after_version`, else ABORTED; (3) every reference must name a live version, else
            /// NOT_FOUND naming it; (4) the subject is created if new (owned by `registered_by`)
            /// and the version stored with its references. Two hubs creating the same subject at
            /// once: the loser's unique violation is ABORTED as well.
            ///
            /// The new version is one past the highest ever handed out in the subject. That is
            /// `after_version + 1` unless the subject's highest version was deleted for good, whose
            /// number is not given out again.
            async fn register_schema(&self, new: &NewSchema<'_>) -> Result<Registration> {
                let at = stored_time(new.at);
                let mut tx = self.begin_write().await?;

                let mut query = QueryBuilder::<$db>::new("SELECT last_version FROM schema_subjects WHERE subject = ");
                query.push_bind(new.subject).push(" ").push(FOR_UPDATE);
                let last_version: Option<i64> = query
                    .build_query_scalar()
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| translate(e, &format!("schema subject {}", new.subject)))?;

                let mut query = QueryBuilder::<$db>::new("SELECT version FROM schema_versions WHERE subject = ");
                query.push_bind(new.subject);
                query.push(" AND fingerprint = ").push_bind(new.fingerprint);
                query.push(" AND NOT deleted ORDER BY version LIMIT 1");
                let same: Option<i64> = query
                    .build_query_scalar()
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

                let mut query =
                    QueryBuilder::<$db>::new("SELECT COALESCE(MAX(version), 0) FROM schema_versions WHERE subject = ");
                query.push_bind(new.subject);
                let highest: i64 = query.build_query_scalar().fetch_one(&mut *tx).await.map_err(db_error)?;
                if highest != i64::from(new.after_version) {
                    return Err(subject_changed(new.subject));
                }

                for reference in new.references {
                    match version_live(&mut tx, &reference.subject, reference.version, FOR_SHARE).await? {
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
                let number = u32::try_from(version).map_err(|_| {
                    Error::FailedPrecondition(format!("subject {} has no version numbers left", new.subject))
                })?;
                if last_version.is_some() {
                    let mut query = QueryBuilder::<$db>::new("UPDATE schema_subjects SET last_version = ");
                    query.push_bind(version).push(" WHERE subject = ").push_bind(new.subject);
                    query
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| registration_error(e, new.subject))?;
                } else {
                    // A hub creating the same subject meanwhile holds the key until it commits
                    // (PostgreSQL); then this insert fails with a unique violation.
                    let mut query = QueryBuilder::<$db>::new(
                        "INSERT INTO schema_subjects (subject, owner, compatibility, last_version, created_at) VALUES (",
                    );
                    query.push_bind(new.subject).push(", ").push_bind(new.registered_by);
                    query.push(", NULL, ").push_bind(version).push(", ").push_bind(at).push(")");
                    query
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| registration_error(e, new.subject))?;
                }
                let mut query = QueryBuilder::<$db>::new("INSERT INTO schema_versions (");
                query.push(SCHEMA_COLUMNS).push(") VALUES (");
                let mut values = query.separated(", ");
                values.push_bind(new.subject);
                values.push_bind(version);
                values.push_bind(new.content);
                values.push_bind(new.fingerprint);
                values.push_bind(new.registered_by);
                values.push_bind(false);
                values.push_bind(at);
                query.push(")");
                query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| registration_error(e, new.subject))?;
                for (position, reference) in new.references.iter().enumerate() {
                    let mut query = QueryBuilder::<$db>::new(
                        "INSERT INTO schema_references (subject, version, position, ref_subject, ref_version) VALUES (",
                    );
                    let mut values = query.separated(", ");
                    values.push_bind(new.subject);
                    values.push_bind(version);
                    values.push_bind(i32::try_from(position).map_err(|_| Error::invalid("references", "are too many"))?);
                    values.push_bind(&reference.subject);
                    values.push_bind(i64::from(reference.version));
                    query.push(")");
                    query
                        .build()
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

            /// Any stored subject, also one whose versions are all deleted; `version_count` counts
            /// the live versions.
            async fn get_subject(&self, subject: &str) -> Result<Option<Subject>> {
                let mut conn = self.$read.acquire().await.map_err(db_error)?;
                fetch_subject(&mut conn, subject).await
            }

            /// `latest_version` is the highest live version (`None` if there is none);
            /// `version_count` counts the live versions, or every stored one with `include_deleted`.
            async fn list_subjects(&self, after: Option<&str>, limit: u32, include_deleted: bool) -> Result<Vec<Subject>> {
                let mut query = select_subjects::<$db>(include_deleted);
                query.push(" WHERE 1 = 1");
                if !include_deleted {
                    query.push(
                        " AND EXISTS (SELECT 1 FROM schema_versions v WHERE v.subject = s.subject AND NOT v.deleted)",
                    );
                }
                if let Some(after) = after {
                    query.push(" AND s.subject > ").push_bind(after);
                }
                query.push(" ORDER BY s.subject LIMIT ").push_bind(i64::from(limit));
                let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                rows.iter().map(subject).collect()
            }

            async fn get_schema(&self, subject: &str, version: u32) -> Result<Option<RegisteredSchema>> {
                // One snapshot for the version and its references.
                let mut tx = self.begin_snapshot().await?;
                fetch_schema(&mut tx, subject, version).await
            }

            async fn latest_schema(&self, subject: &str) -> Result<Option<RegisteredSchema>> {
                let mut tx = self.begin_snapshot().await?;
                let mut query = QueryBuilder::<$db>::new("SELECT MAX(version) FROM schema_versions WHERE subject = ");
                query.push_bind(subject).push(" AND NOT deleted");
                let latest: Option<i64> = query.build_query_scalar().fetch_one(&mut *tx).await.map_err(db_error)?;
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
                let mut tx = self.begin_write().await?;
                let mut query = QueryBuilder::<$db>::new("UPDATE schema_versions SET deleted = ");
                query.push_bind(deleted);
                push_version(&mut query, ("subject", "version"), subject, version);
                let updated = query
                    .build()
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

            /// Refused (FAILED_PRECONDITION) unless the version is soft-deleted, and while a
            /// catalogue entry is bound to it or another version references it; the message names
            /// the first such entry or version. Removes the version's own references with it. The
            /// subject stays, with its owner, its mode and its count of versions handed out.
            async fn delete_schema_permanently(&self, subject: &str, version: u32) -> Result<()> {
                let mut tx = self.begin_write().await?;
                // On PostgreSQL the row lock waits for transactions that are binding or
                // referencing this version.
                match version_live(&mut tx, subject, version, FOR_UPDATE).await? {
                    None => return Err(schema_not_found(subject, version)),
                    Some(true) => {
                        return Err(Error::FailedPrecondition(format!(
                            "schema {subject} version {version} is not deleted; delete it (soft) before deleting it for good"
                        )));
                    }
                    Some(false) => {}
                }

                let mut query = QueryBuilder::<$db>::new("SELECT resource_code FROM entry_schema_bindings");
                push_version(&mut query, ("subject", "version"), subject, version);
                query.push(" ORDER BY resource_code LIMIT 1");
                let bound: Option<String> = query
                    .build_query_scalar()
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if let Some(resource_code) = bound {
                    return Err(Error::FailedPrecondition(format!(
                        "schema {subject} version {version} describes catalogue entry {resource_code}; bind the entry to \
                         another version first"
                    )));
                }

                let mut query = QueryBuilder::<$db>::new("SELECT id FROM datasets");
                push_version(&mut query, ("schema_subject", "schema_version"), subject, version);
                query.push(" ORDER BY id LIMIT 1");
                let used_by: Option<String> = query
                    .build_query_scalar()
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if let Some(dataset) = used_by {
                    return Err(Error::FailedPrecondition(format!(
                        "schema {subject} version {version} is the schema of dataset {dataset}; upgrade the dataset first"
                    )));
                }

                let mut query = QueryBuilder::<$db>::new("SELECT subject, version FROM schema_references");
                push_version(&mut query, ("ref_subject", "ref_version"), subject, version);
                query.push(" ORDER BY subject, version LIMIT 1");
                let referrer = query.build().fetch_optional(&mut *tx).await.map_err(db_error)?;
                if let Some(row) = referrer {
                    let by: String = get(&row, "subject")?;
                    let by_version: i64 = get(&row, "version")?;
                    return Err(Error::FailedPrecondition(format!(
                        "schema {subject} version {version} is referenced by schema {by} version {by_version}"
                    )));
                }

                for table in ["schema_references", "schema_versions"] {
                    let mut query = QueryBuilder::<$db>::new("DELETE FROM ");
                    query.push(table);
                    push_version(&mut query, ("subject", "version"), subject, version);
                    query
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| translate(e, &format!("schema {subject} version {version}")))?;
                }
                tx.commit().await.map_err(db_error)?;
                Ok(())
            }

            async fn default_compatibility(&self) -> Result<CompatibilityMode> {
                let mut query = QueryBuilder::<$db>::new("SELECT value FROM registry_settings WHERE key = ");
                query.push_bind(DEFAULT_COMPATIBILITY_KEY);
                let value: Option<String> = query
                    .build_query_scalar()
                    .fetch_optional(&self.$read)
                    .await
                    .map_err(db_error)?;
                match value {
                    Some(mode) => compatibility(&mode),
                    None => Ok(DEFAULT_MODE),
                }
            }

            async fn set_default_compatibility(&self, mode: CompatibilityMode) -> Result<()> {
                let mut query = QueryBuilder::<$db>::new("INSERT INTO registry_settings (key, value) VALUES (");
                query.push_bind(DEFAULT_COMPATIBILITY_KEY).push(", ").push_bind(mode.as_str());
                query.push(") ON CONFLICT (key) DO UPDATE SET value = excluded.value");
                query
                    .build()
                    .execute(&self.$write)
                    .await
                    .map_err(|e| translate(e, "the default compatibility"))?;
                Ok(())
            }

            async fn set_subject_compatibility(&self, subject: &str, mode: Option<CompatibilityMode>) -> Result<Subject> {
                let mut tx = self.begin_write().await?;
                let mut query = QueryBuilder::<$db>::new("UPDATE schema_subjects SET compatibility = ");
                query.push_bind(mode.map(|m| m.as_str()));
                query.push(" WHERE subject = ").push_bind(subject);
                let updated = query
                    .build()
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
                let mut tx = self.begin_write().await?;
                let mut query = QueryBuilder::<$db>::new("SELECT resource_code FROM catalog_entries WHERE resource_code = ");
                query.push_bind(&binding.resource_code);
                let entry = query.build().fetch_optional(&mut *tx).await.map_err(db_error)?;
                if entry.is_none() {
                    return Err(Error::NotFound(format!("catalogue entry {}", binding.resource_code)));
                }
                match version_live(&mut tx, &schema.subject, schema.version, FOR_SHARE).await? {
                    Some(true) => {}
                    Some(false) => {
                        return Err(Error::NotFound(format!(
                            "schema {} version {} (it is deleted)",
                            schema.subject, schema.version
                        )));
                    }
                    None => return Err(schema_not_found(&schema.subject, schema.version)),
                }
                let mut query = QueryBuilder::<$db>::new(
                    "INSERT INTO entry_schema_bindings (resource_code, subject, version, bound_by, bound_at) VALUES (",
                );
                let mut values = query.separated(", ");
                values.push_bind(&binding.resource_code);
                values.push_bind(&schema.subject);
                values.push_bind(i64::from(schema.version));
                values.push_bind(&binding.bound_by);
                values.push_bind(stored_time(binding.at));
                query.push(
                    ") ON CONFLICT (resource_code) DO UPDATE SET subject = excluded.subject, \
                     version = excluded.version, bound_by = excluded.bound_by, bound_at = excluded.bound_at",
                );
                query.build().execute(&mut *tx).await.map_err(|e| {
                    translate(
                        e,
                        &format!("the schema binding of catalogue entry {}", binding.resource_code),
                    )
                })?;
                tx.commit().await.map_err(db_error)?;
                Ok(())
            }

            async fn entry_schema(&self, resource_code: &str) -> Result<Option<EntrySchemaBinding>> {
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT resource_code, subject, version, bound_by, bound_at FROM entry_schema_bindings \
                     WHERE resource_code = ",
                );
                query.push_bind(resource_code);
                let row = query.build().fetch_optional(&self.$read).await.map_err(db_error)?;
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
    };
}
pub(crate) use schema_store;
