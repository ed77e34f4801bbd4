//! The resource directory's entries (目录), the same way on both backends: creation, versions,
//! reads and search. What differs between the engines stays in each backend's `catalog.rs`: how
//! an entry's content is stored (JSONB on PostgreSQL, JSON text on SQLite) and whether the search
//! index needs writing (SQLite's FTS5 rows do; PostgreSQL's expression index does not).

/// The current version of an entry, with its provider's name.
pub(crate) const SELECT_ENTRY: &str = "SELECT e.resource_code, e.provider_code, d.name AS provider_name, e.content, \
     e.state, e.version, e.state_reason, e.published_at, e.created_at, e.updated_at \
     FROM catalog_entries e JOIN departments d ON d.code = e.provider_code";

/// An entry's version as the database holds it (a BIGINT on both engines).
pub(crate) fn db_version(version: u64) -> xinqiao_domain::Result<i64> {
    i64::try_from(version).map_err(|_| xinqiao_domain::Error::invalid("version", "is out of range"))
}

/// The one implementation of [`crate::CatalogStore`], for either backend, instantiated in the
/// backend's `catalog` module, where `get` and `stored_time` are that backend's.
/// `$row` and `$conn` are its row and connection types, `$read` and `$write` its pools (reads
/// outside a transaction), and `begin_write` its write transaction. The module also provides:
/// - `ContentValue<'a>`, `content_value` and `content_of`: the entry content as bound to and read
///   from the `content` columns;
/// - `SEARCH_ENGINE` and `index_search_text` on the store: the search SQL's dialect, and the
///   step that keeps the search index in the transaction that writes the entry.
macro_rules! catalog_store {
    ($store:ty, $db:ty, $row:ty, $conn:ty, $read:ident, $write:ident) => {
        use chrono::{DateTime, Utc};
        use sqlx::QueryBuilder;
        use xinqiao_domain::catalogue::{CatalogEntry, EntryContent, EntryFilter, resource_code};
        use xinqiao_domain::lifecycle::{EntryAction, EntryState};
        use xinqiao_domain::policy::EntryVisibility;
        use xinqiao_domain::search::SearchPosition;
        use xinqiao_domain::{Error, Result};

        use crate::catalog::{SELECT_ENTRY, db_version};
        use crate::error::{corrupt, db_error, translate};
        use crate::{CatalogStore, EntryChange, EntryVersionRecord};

        fn entry(row: &$row) -> Result<CatalogEntry> {
            let state: String = get(row, "state")?;
            let version: i64 = get(row, "version")?;
            Ok(CatalogEntry {
                resource_code: get(row, "resource_code")?,
                provider_code: get(row, "provider_code")?,
                provider_name: get(row, "provider_name")?,
                content: content_of(row)?,
                state: EntryState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
                version: u64::try_from(version).map_err(|e| corrupt("version", e))?,
                state_reason: get(row, "state_reason")?,
                published_at: get(row, "published_at")?,
                created_at: get(row, "created_at")?,
                updated_at: get(row, "updated_at")?,
            })
        }

        async fn fetch_entry(conn: &mut $conn, resource_code: &str) -> Result<Option<CatalogEntry>> {
            let mut query = QueryBuilder::<$db>::new(SELECT_ENTRY);
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
            content: ContentValue<'a>,
        }

        /// Records the version an entry has just reached, with the change that made it.
        async fn insert_version(conn: &mut $conn, entry: &StoredEntry<'_>, change: &EntryChange) -> Result<()> {
            let mut query = QueryBuilder::<$db>::new(
                "INSERT INTO catalog_entry_versions (resource_code, version, state, state_reason, published_at, \
                 updated_at, content, action, actor, reason, changed_at) VALUES (",
            );
            let mut values = query.separated(", ");
            values.push_bind(entry.resource_code);
            values.push_bind(entry.version);
            values.push_bind(entry.state.as_str());
            values.push_bind(entry.state_reason);
            values.push_bind(entry.published_at);
            values.push_bind(entry.updated_at);
            values.push_bind(&entry.content);
            values.push_bind(change.action.as_str());
            values.push_bind(&change.actor);
            values.push_bind(&change.reason);
            values.push_bind(stored_time(change.at));
            query.push(")");
            query.build().execute(conn).await.map_err(|e| {
                translate(
                    e,
                    &format!("version {} of catalogue entry {}", entry.version, entry.resource_code),
                )
            })?;
            Ok(())
        }

        #[async_trait::async_trait]
        impl CatalogStore for $store {
            async fn create_entry(
                &self,
                provider_code: &str,
                content: &EntryContent,
                change: &EntryChange,
            ) -> Result<CatalogEntry> {
                let at = stored_time(change.at);
                let stored_content = content_value(content)?;
                let mut tx = self.begin_write().await?;

                let mut query = QueryBuilder::<$db>::new("SELECT 1 FROM departments WHERE code = ");
                query.push_bind(provider_code);
                let provider = query
                    .build()
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if provider.is_none() {
                    return Err(Error::NotFound(format!("department {provider_code}")));
                }

                // The upsert locks the classification's counter row until this transaction ends
                // (on PostgreSQL; on SQLite the single writer does), so concurrent creators on any
                // hub node take numbers one after another, never the same.
                let mut query = QueryBuilder::<$db>::new(
                    "INSERT INTO entry_sequences (classification, last_sequence) VALUES (",
                );
                query.push_bind(&content.classification).push(
                    ", 1) ON CONFLICT (classification) DO UPDATE SET last_sequence = entry_sequences.last_sequence + 1 \
                     RETURNING last_sequence",
                );
                let sequence: i64 = query
                    .build_query_scalar()
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| translate(e, &format!("the sequence of classification {}", content.classification)))?;
                let sequence = u64::try_from(sequence).map_err(|e| corrupt("entry_sequences.last_sequence", e))?;
                let code = resource_code(&content.classification, sequence);
                let search_text = content.search_text().to_lowercase();

                let mut query = QueryBuilder::<$db>::new(
                    "INSERT INTO catalog_entries (resource_code, provider_code, classification, name, summary, \
                     search_text, share_type, open_type, update_cycle, format, state, version, state_reason, content, \
                     published_at, created_at, updated_at) VALUES (",
                );
                let mut values = query.separated(", ");
                values.push_bind(&code);
                values.push_bind(provider_code);
                values.push_bind(&content.classification);
                values.push_bind(&content.name);
                values.push_bind(&content.summary);
                values.push_bind(&search_text);
                values.push_bind(content.share.share_type.as_str());
                values.push_bind(content.open.open_type.as_str());
                values.push_bind(content.update_cycle.as_str());
                values.push_bind(content.format.as_str());
                values.push_bind(EntryState::Draft.as_str());
                values.push("1");
                values.push("''");
                values.push_bind(&stored_content);
                values.push("NULL");
                values.push_bind(at);
                values.push_bind(at);
                query.push(")");
                query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| translate(e, &format!("catalogue entry {code}")))?;
                Self::index_search_text(&mut tx, "", &code, &search_text).await?;

                let stored = StoredEntry {
                    resource_code: &code,
                    version: 1,
                    state: EntryState::Draft,
                    state_reason: "",
                    published_at: None,
                    updated_at: at,
                    content: stored_content,
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
                    content: content_value(content)?,
                };
                let search_text = content.search_text().to_lowercase();
                let mut tx = self.begin_write().await?;

                // A compare-and-set on the version: a concurrent change that got here first has
                // moved the version on, and this update then touches no row. (On PostgreSQL it
                // holds the row lock; once it commits, this update re-checks the condition.)
                let mut query = QueryBuilder::<$db>::new("UPDATE catalog_entries SET classification = ");
                query.push_bind(&content.classification);
                query.push(", name = ").push_bind(&content.name);
                query.push(", summary = ").push_bind(&content.summary);
                query.push(", search_text = ").push_bind(&search_text);
                query.push(", share_type = ").push_bind(content.share.share_type.as_str());
                query.push(", open_type = ").push_bind(content.open.open_type.as_str());
                query.push(", update_cycle = ").push_bind(content.update_cycle.as_str());
                query.push(", format = ").push_bind(content.format.as_str());
                query.push(", state = ").push_bind(stored.state.as_str());
                query.push(", version = ").push_bind(version);
                query.push(", state_reason = ").push_bind(stored.state_reason);
                query.push(", content = ").push_bind(&stored.content);
                query.push(", published_at = ").push_bind(stored.published_at);
                query.push(", updated_at = ").push_bind(stored.updated_at);
                query.push(" WHERE resource_code = ").push_bind(&entry.resource_code);
                query.push(" AND version = ").push_bind(version - 1);
                let updated = query
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| translate(e, &format!("catalogue entry {}", entry.resource_code)))?;

                if updated.rows_affected() == 0 {
                    let mut query = QueryBuilder::<$db>::new("SELECT version FROM catalog_entries WHERE resource_code = ");
                    query.push_bind(&entry.resource_code);
                    let current: Option<i64> = query
                        .build_query_scalar()
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

                Self::index_search_text(&mut tx, "", &entry.resource_code, &search_text).await?;
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
                let mut conn = self.$read.acquire().await.map_err(db_error)?;
                fetch_entry(&mut conn, resource_code).await
            }

            async fn get_entry_version(&self, resource_code: &str, version: u64) -> Result<Option<CatalogEntry>> {
                let Ok(version) = i64::try_from(version) else {
                    return Ok(None);
                };
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT e.resource_code, e.provider_code, d.name AS provider_name, v.content, v.state, v.version, \
                     v.state_reason, v.published_at, e.created_at, v.updated_at \
                     FROM catalog_entry_versions v \
                     JOIN catalog_entries e ON e.resource_code = v.resource_code \
                     JOIN departments d ON d.code = e.provider_code \
                     WHERE v.resource_code = ",
                );
                query.push_bind(resource_code).push(" AND v.version = ").push_bind(version);
                let row = query
                    .build()
                    .fetch_optional(&self.$read)
                .await
                .map_err(db_error)?;
                row.as_ref().map(entry).transpose()
            }

            async fn list_entry_versions(&self, resource_code: &str) -> Result<Vec<EntryVersionRecord>> {
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT version, state, action, actor, reason, changed_at FROM catalog_entry_versions \
                     WHERE resource_code = ",
                );
                query.push_bind(resource_code).push(" ORDER BY version");
                let rows = query
                    .build()
                    .fetch_all(&self.$read)
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
                after: Option<&SearchPosition>,
                limit: u32,
            ) -> Result<Vec<CatalogEntry>> {
                let search = crate::search::Search::new(
                    Self::SEARCH_ENGINE,
                    crate::search::Source::Own,
                    visibility,
                    filter,
                    after,
                );
                let mut candidates = None;
                if let (Some(mut all), Some(mut names)) = (
                    search.count_candidates::<$db>(crate::search::Terms::All),
                    search.count_candidates::<$db>(crate::search::Terms::Name),
                ) {
                    let all: i64 = all.build_query_scalar().fetch_one(&self.$read).await.map_err(db_error)?;
                    let names: i64 = names.build_query_scalar().fetch_one(&self.$read).await.map_err(db_error)?;
                    candidates = Some((all, names));
                }
                let mut found = Vec::new();
                for step in search.steps(candidates) {
                    let room = limit.saturating_sub(u32::try_from(found.len()).unwrap_or(u32::MAX));
                    if room == 0 {
                        break;
                    }
                    let mut query = QueryBuilder::<$db>::new(SELECT_ENTRY);
                    search.push_step(&mut query, step, room);
                    let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                    for row in &rows {
                        found.push(entry(row)?);
                    }
                }
                Ok(found)
            }

            async fn get_entries(&self, resource_codes: &[String]) -> Result<Vec<CatalogEntry>> {
                if resource_codes.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = QueryBuilder::<$db>::new(SELECT_ENTRY);
                query.push(" WHERE e.resource_code IN (");
                let mut list = query.separated(", ");
                for code in resource_codes {
                    list.push_bind(code.clone());
                }
                query.push(") ORDER BY e.resource_code");
                let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                rows.iter().map(entry).collect()
            }

            async fn entries_changed_since(
                &self,
                since: DateTime<Utc>,
                after: Option<(DateTime<Utc>, String)>,
                limit: u32,
            ) -> Result<Vec<CatalogEntry>> {
                let mut query = QueryBuilder::<$db>::new(SELECT_ENTRY);
                query.push(" WHERE e.updated_at >= ").push_bind(stored_time(since));
                if let Some((at, code)) = after {
                    let at = stored_time(at);
                    query.push(" AND (e.updated_at > ").push_bind(at);
                    query.push(" OR (e.updated_at = ").push_bind(at);
                    query.push(" AND e.resource_code > ").push_bind(code).push("))");
                }
                query
                    .push(" ORDER BY e.updated_at, e.resource_code LIMIT ")
                    .push_bind(i64::from(limit));
                let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                rows.iter().map(entry).collect()
            }
        }
    };
}

pub(crate) use catalog_store;
