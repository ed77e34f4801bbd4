//! Operating a SQLite hub: the implementation shared with PostgreSQL
//! (`crate::operations::operations_store!`), and this backend's own migration state, migrations
//! and online backups.

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};
use xinqiao_domain::Error;

use super::{MIGRATOR, SqliteStore, get, stored_time};
use crate::error::migrate_error;

impl SqliteStore {
    async fn has_table(&self, name: &str) -> Result<bool> {
        let found = sqlx::query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(name)
            .fetch_optional(&self.readers)
            .await
            .map_err(db_error)?;
        Ok(found.is_some())
    }

    fn known_migrations() -> BTreeSet<i64> {
        MIGRATOR.iter().map(|m| m.version).collect()
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.writer).await.map_err(migrate_error)
    }

    /// An online copy of the database file: VACUUM INTO, then SQLite's own check of the copy.
    async fn backup(&self, path: &Path) -> Result<()> {
        let target = path
            .to_str()
            .ok_or_else(|| Error::invalid("backup path", "must be valid UTF-8"))?;
        if path.exists() {
            return Err(Error::AlreadyExists(format!("backup file {}", path.display())));
        }
        // VACUUM INTO reads one snapshot of the database in a read transaction (WAL lets writers
        // go on meanwhile) and writes it as a new, compact database file.
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.readers)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, path = %path.display(), "backup failed");
                Error::Unavailable(format!(
                    "cannot write the backup to {}: {}",
                    path.display(),
                    io_reason(&e)
                ))
            })?;
        // The copy must open on its own and pass SQLite's own check; it is opened read-only so
        // that checking it changes nothing in it.
        let options = SqliteConnectOptions::new().filename(path).read_only(true);
        let mut copy = SqliteConnection::connect_with(&options).await.map_err(db_error)?;
        let check: String = sqlx::query("PRAGMA integrity_check")
            .fetch_one(&mut copy)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db_error)?;
        let _ = copy.close().await;
        if check != "ok" {
            return Err(Error::Internal(format!(
                "the backup does not pass SQLite's integrity check: {check}"
            )));
        }
        Ok(())
    }
}

/// The part of a failed VACUUM INTO worth telling an operator (disk full, no such directory),
/// without SQL.
fn io_reason(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

crate::operations::operations_store!(SqliteStore, sqlx::Sqlite, readers, writer);
