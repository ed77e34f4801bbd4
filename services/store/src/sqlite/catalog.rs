//! The resource directory's entries on SQLite: creation, versions, reads and search.

use super::*;
use xinqiao_domain::search::SearchPosition;

/// The current version of an entry, with its provider's name.
const SELECT_ENTRY: &str = "SELECT e.resource_code, e.provider_code, d.name AS provider_name, e.content, e.state, \
     e.version, e.state_reason, e.published_at, e.created_at, e.updated_at \
     FROM catalog_entries e JOIN departments d ON d.code = e.provider_code";

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

impl SqliteStore {
    /// The search SQL's dialect, for the code shared with PostgreSQL.
    pub(crate) const SEARCH_ENGINE: crate::search::Engine = crate::search::Engine::Sqlite;

    /// Writes the search index's terms of an entry (this hub's own: origin ''; or one aggregated
    /// from a child) in the transaction that writes the entry, replacing those of its earlier
    /// version. (PostgreSQL's index is an expression index and needs no such step.)
    pub(crate) async fn index_search_text(
        conn: &mut SqliteConnection,
        origin_hub: &str,
        resource_code: &str,
        search_text: &str,
    ) -> Result<()> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO catalog_search_docs (origin_hub, resource_code) VALUES (?, ?) \
             ON CONFLICT (origin_hub, resource_code) DO UPDATE SET origin_hub = excluded.origin_hub RETURNING id",
        )
        .bind(origin_hub)
        .bind(resource_code)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
        sqlx::query("INSERT OR REPLACE INTO catalog_search_terms (rowid, terms) VALUES (?, ?)")
            .bind(id)
            .bind(crate::search::indexed_terms(search_text))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        sqlx::query("INSERT OR REPLACE INTO catalog_search_name_terms (rowid, terms) VALUES (?, ?)")
            .bind(id)
            .bind(crate::search::indexed_terms(crate::search::name_part(search_text)))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(())
    }
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
        let search_text = content.search_text().to_lowercase();

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
        .bind(&search_text)
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
        Self::index_search_text(&mut tx, "", &code, &search_text).await?;

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
        let search_text = content.search_text().to_lowercase();
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
        .bind(&search_text)
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
            search.count_candidates::<Sqlite>(crate::search::Terms::All),
            search.count_candidates::<Sqlite>(crate::search::Terms::Name),
        ) {
            let all: i64 = all
                .build_query_scalar()
                .fetch_one(&self.readers)
                .await
                .map_err(db_error)?;
            let names: i64 = names
                .build_query_scalar()
                .fetch_one(&self.readers)
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
            let mut query = QueryBuilder::<Sqlite>::new(SELECT_ENTRY);
            search.push_step(&mut query, step, room);
            let rows = query.build().fetch_all(&self.readers).await.map_err(db_error)?;
            for row in &rows {
                found.push(entry(row)?);
            }
        }
        Ok(found)
    }
}
