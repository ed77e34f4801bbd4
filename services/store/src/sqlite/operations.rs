//! Operating a SQLite hub: migration state, node announcements, readiness and online backups.

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};
use xinqiao_domain::{Error, Result};

use super::{MIGRATOR, SqliteStore, get, stored_time};
use crate::error::{db_error, migrate_error, translate};
use crate::operations::{HubNode, OperationsStore, SchemaStatus};

impl SqliteStore {
    async fn has_table(&self, name: &str) -> Result<bool> {
        let found = sqlx::query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(name)
            .fetch_optional(&self.readers)
            .await
            .map_err(db_error)?;
        Ok(found.is_some())
    }
}

#[async_trait]
impl OperationsStore for SqliteStore {
    async fn schema_status(&self) -> Result<SchemaStatus> {
        let known = MIGRATOR.iter().map(|m| m.version).collect();
        let applied = if self.has_table("_sqlx_migrations").await? {
            sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.readers)
                .await
                .map_err(db_error)?
                .into_iter()
                .collect()
        } else {
            BTreeSet::new()
        };
        Ok(SchemaStatus { applied, known })
    }

    async fn apply_migrations(&self) -> Result<()> {
        MIGRATOR.run(&self.writer).await.map_err(migrate_error)
    }

    async fn announce_node(&self, node: &HubNode) -> Result<()> {
        sqlx::query(
            "INSERT INTO hub_nodes (id, host, pid, listen, version, schema_known, started_at, seen_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .bind(&node.id)
        .bind(&node.host)
        .bind(i64::from(node.pid))
        .bind(&node.listen)
        .bind(&node.version)
        .bind(node.schema_known)
        .bind(stored_time(node.started_at))
        .bind(stored_time(node.seen_at))
        .execute(&self.writer)
        .await
        .map_err(|e| translate(e, "hub node"))?;
        Ok(())
    }

    async fn retire_node(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM hub_nodes WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(|e| translate(e, "hub node"))?;
        Ok(())
    }

    async fn list_nodes(&self, since: DateTime<Utc>) -> Result<Vec<HubNode>> {
        if !self.has_table("hub_nodes").await? {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT id, host, pid, listen, version, schema_known, started_at, seen_at FROM hub_nodes \
             WHERE seen_at >= ? ORDER BY host, pid",
        )
        .bind(stored_time(since))
        .fetch_all(&self.readers)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let pid: i64 = get(row, "pid")?;
                Ok(HubNode {
                    id: get(row, "id")?,
                    host: get(row, "host")?,
                    pid: u32::try_from(pid).unwrap_or_default(),
                    listen: get(row, "listen")?,
                    version: get(row, "version")?,
                    schema_known: get(row, "schema_known")?,
                    started_at: get(row, "started_at")?,
                    seen_at: get(row, "seen_at")?,
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await.map_err(db_error)?;
        Ok(())
    }

    async fn backup_to(&self, path: &Path) -> Result<()> {
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
