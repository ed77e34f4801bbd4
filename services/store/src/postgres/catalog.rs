//! The resource directory's entries on PostgreSQL: creation, versions, reads and search.

use super::*;
use xinqiao_domain::search::SearchPosition;

/// The current version of an entry, with its provider's name.
const SELECT_ENTRY: &str = "SELECT e.resource_code, e.provider_code, d.name AS provider_name, e.content, e.state, \
     e.version, e.state_reason, e.published_at, e.created_at, e.updated_at \
     FROM catalog_entries e JOIN departments d ON d.code = e.provider_code";

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

impl PgStore {
    /// The search SQL's dialect, for the code shared with SQLite.
    pub(crate) const SEARCH_ENGINE: crate::search::Engine = crate::search::Engine::Postgres;

    /// Nothing to do: the search index is a GIN index over an expression of `search_text`
    /// (migration 0012), which PostgreSQL keeps with the row. SQLite's needs this step.
    pub(crate) async fn index_search_text(
        _conn: &mut PgConnection,
        _origin_hub: &str,
        _resource_code: &str,
        _search_text: &str,
    ) -> Result<()> {
        Ok(())
    }
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
            search.count_candidates::<Postgres>(crate::search::Terms::All),
            search.count_candidates::<Postgres>(crate::search::Terms::Name),
        ) {
            let all: i64 = all.build_query_scalar().fetch_one(&self.pool).await.map_err(db_error)?;
            let names: i64 = names
                .build_query_scalar()
                .fetch_one(&self.pool)
                .await
                .map_err(db_error)?;
            candidates = Some((all, names));
        }
        let mut found = Vec::new();
        for step in search.steps(candidates) {
            let room = limit.saturating_sub(u32::try_from(found.len()).unwrap_or(u32::MAX));
            if room == 0 {
                break;
            }
            let mut query = QueryBuilder::<Postgres>::new(SELECT_ENTRY);
            search.push_step(&mut query, step, room);
            let rows = query.build().fetch_all(&self.pool).await.map_err(db_error)?;
            for row in &rows {
                found.push(entry(row)?);
            }
        }
        Ok(found)
    }
}
