//! Operating a SQLite hub: migration state, node announcements, readiness and online backups.

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};
use xinqiao_domain::audit::{AuditEvent, ChainLinker};
use xinqiao_domain::{Error, Result};

use super::{MIGRATOR, SqliteStore, get, stored_time};
use crate::error::{db_error, migrate_error, translate};
use crate::operations::{HubNode, OpenStream, OperationsStore, SchemaStatus};

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

    async fn record_open_stream(&self, stream: &OpenStream) -> Result<()> {
        sqlx::query(
            "INSERT INTO open_streams (request_id, node_id, actor, action, target, about, consumer, opened_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&stream.request_id)
        .bind(&stream.node_id)
        .bind(&stream.actor)
        .bind(&stream.action)
        .bind(&stream.target)
        .bind(&stream.about)
        .bind(&stream.consumer)
        .bind(stored_time(stream.opened_at))
        .execute(&self.writer)
        .await
        .map_err(|e| translate(e, "open stream"))?;
        Ok(())
    }

    async fn forget_open_stream(&self, request_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM open_streams WHERE request_id = ?")
            .bind(request_id)
            .execute(&self.writer)
            .await
            .map_err(|e| translate(e, "open stream"))?;
        Ok(())
    }

    async fn list_open_streams(&self) -> Result<Vec<OpenStream>> {
        let rows = sqlx::query(
            "SELECT request_id, node_id, actor, action, target, about, consumer, opened_at FROM open_streams \
             ORDER BY opened_at, request_id",
        )
        .fetch_all(&self.readers)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(OpenStream {
                    request_id: get(row, "request_id")?,
                    node_id: get(row, "node_id")?,
                    actor: get(row, "actor")?,
                    action: get(row, "action")?,
                    target: get(row, "target")?,
                    about: get(row, "about")?,
                    consumer: get(row, "consumer")?,
                    opened_at: get(row, "opened_at")?,
                })
            })
            .collect()
    }

    async fn end_orphaned_stream(&self, request_id: &str, end: &AuditEvent, linker: &ChainLinker) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let forgotten = sqlx::query("DELETE FROM open_streams WHERE request_id = ?")
            .bind(request_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| translate(e, "open stream"))?
            .rows_affected();
        if forgotten == 0 {
            return Ok(false);
        }
        super::audit::append_in(&mut tx, std::slice::from_ref(end), linker).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
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
