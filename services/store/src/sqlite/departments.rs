//! Registered departments on SQLite: the implementation shared with PostgreSQL
//! (`crate::departments::department_store!`), over this backend's pools.

use super::{SqliteStore, get, stored_time};

impl SqliteStore {
    /// One hub per SQLite file: its own changes reach its cache directly, and there are no other
    /// nodes to tell.
    async fn department_changed(&self, _code: &str) {}

    async fn listen_for_departments(&self, _sink: tokio::sync::mpsc::Sender<String>) -> Result<bool> {
        Ok(false)
    }
}

crate::departments::department_store!(SqliteStore, sqlx::Sqlite, sqlx::sqlite::SqliteRow, readers, writer);
