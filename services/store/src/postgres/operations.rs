//! Operating a PostgreSQL hub: migration state, node announcements and readiness. Backups are
//! PostgreSQL's own (`pg_dump`), not the hub's.

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use xinqiao_domain::audit::{AuditEvent, ChainLinker};
use xinqiao_domain::{Error, Result};

use super::{PgStore, get, stored_time};
use crate::error::{db_error, translate};
use crate::operations::{HubNode, OpenStream, OperationsStore, SchemaStatus};

impl PgStore {
    /// Whether the table exists where the search_path looks.
    async fn has_table(&self, name: &str) -> Result<bool> {
        sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }
}

#[async_trait]
impl OperationsStore for PgStore {
    async fn schema_status(&self) -> Result<SchemaStatus> {
        let known = Self::migrator().iter().map(|m| m.version).collect();
        let applied = if self.has_table("_sqlx_migrations").await? {
            sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
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
        self.migrate().await
    }

    async fn announce_node(&self, node: &HubNode) -> Result<()> {
        sqlx::query(
            "INSERT INTO hub_nodes (id, host, pid, listen, version, schema_known, started_at, seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
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
        .execute(&self.pool)
        .await
        .map_err(|e| translate(e, "hub node"))?;
        Ok(())
    }

    async fn retire_node(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM hub_nodes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
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
             WHERE seen_at >= $1 ORDER BY host, pid",
        )
        .bind(stored_time(since))
        .fetch_all(&self.pool)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&stream.request_id)
        .bind(&stream.node_id)
        .bind(&stream.actor)
        .bind(&stream.action)
        .bind(&stream.target)
        .bind(&stream.about)
        .bind(&stream.consumer)
        .bind(stored_time(stream.opened_at))
        .execute(&self.pool)
        .await
        .map_err(|e| translate(e, "open stream"))?;
        Ok(())
    }

    async fn forget_open_stream(&self, request_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM open_streams WHERE request_id = $1")
            .bind(request_id)
            .execute(&self.pool)
            .await
            .map_err(|e| translate(e, "open stream"))?;
        Ok(())
    }

    async fn list_open_streams(&self) -> Result<Vec<OpenStream>> {
        let rows = sqlx::query(
            "SELECT request_id, node_id, actor, action, target, about, consumer, opened_at FROM open_streams \
             ORDER BY opened_at, request_id",
        )
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let forgotten = sqlx::query("DELETE FROM open_streams WHERE request_id = $1")
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
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db_error)?;
        Ok(())
    }

    async fn backup_to(&self, _path: &Path) -> Result<()> {
        Err(Error::FailedPrecondition(
            "a PostgreSQL database is backed up with pg_dump (see README, Running in production), not by the hub"
                .into(),
        ))
    }
}
