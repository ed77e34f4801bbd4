//! The resource directory's entries on PostgreSQL: the implementation shared with SQLite
//! (`crate::catalog::catalog_store!`), with what PostgreSQL does its own way: the content column
//! is JSONB, and the search index is kept by the engine.

// `EntryContent` and `Result` come in with the macro's imports.
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::types::Json;

use super::{PgStore, get, stored_time};

/// The content column is JSONB, which takes (and gives back) JSON values, not text.
type ContentValue<'a> = Json<&'a EntryContent>;

fn content_value(content: &EntryContent) -> Result<ContentValue<'_>> {
    Ok(Json(content))
}

/// The driver decodes the JSONB; a value of another shape fails as the column's decode error.
fn content_of(row: &PgRow) -> Result<EntryContent> {
    let Json(content): Json<EntryContent> = get(row, "content")?;
    Ok(content)
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

crate::catalog::catalog_store!(PgStore, sqlx::Postgres, PgRow, PgConnection, pool, pool);
