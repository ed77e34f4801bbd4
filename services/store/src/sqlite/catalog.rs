//! The resource directory's entries on SQLite: the implementation shared with PostgreSQL
//! (`crate::catalog::catalog_store!`), with what SQLite does its own way: the content column is
//! JSON text, and the search index is FTS5 tables written in the entry's transaction.

// `EntryContent`, `Error`, `Result`, `corrupt` and `db_error` come in with the macro's imports.
use sqlx::sqlite::{SqliteConnection, SqliteRow};

use super::{SqliteStore, get, stored_time};

/// SQLite has no JSON column type: the content is JSON text, encoded once per write and bound to
/// both the entry's row and its version's.
type ContentValue<'a> = String;

fn content_value(content: &EntryContent) -> Result<ContentValue<'static>> {
    serde_json::to_string(content).map_err(|e| Error::Internal(format!("encoding entry content: {e}")))
}

/// The text is decoded here, so unreadable JSON is reported as a corrupt column.
fn content_of(row: &SqliteRow) -> Result<EntryContent> {
    let content: String = get(row, "content")?;
    serde_json::from_str(&content).map_err(|e| corrupt("content", e))
}

impl SqliteStore {
    /// The search SQL's dialect, for the code shared with PostgreSQL.
    pub(crate) const SEARCH_ENGINE: crate::search::Engine = crate::search::Engine::Sqlite;

    /// Writes the search index's terms of an entry (this hub's own: origin ''; or one aggregated
    /// from a child) in the transaction that writes the entry, replacing those of its earlier
    /// version. FTS5 tables are not kept by the engine from the rows they index, unlike
    /// PostgreSQL's expression index, which needs no such step.
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

crate::catalog::catalog_store!(SqliteStore, sqlx::Sqlite, SqliteRow, SqliteConnection, readers, writer);
